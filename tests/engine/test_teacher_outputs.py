"""Which output is the class scores, what kind they are, and how they become scores."""

from collections import namedtuple

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.losses import soft_targets
from engine.teacher_outputs import (
    LOG_PROB_FLOOR,
    PROB_FLOOR,
    OutputInfo,
    describe,
    detect_kind,
    flatten_outputs,
    pick_output,
    to_scores,
    zipmap_array,
)


def _info(name: str, shape: list[int | None], dtype: str = "float32") -> OutputInfo:
    return OutputInfo(name, dtype, shape, scores=dtype.startswith("float") and len(shape) == 2)


def test_flatten_names_dict_keys_tuple_indexes_and_named_tuple_fields() -> None:
    t = torch.zeros(1)
    pair = namedtuple("pair", ["logits", "hidden"])
    out = flatten_outputs({"a": (t, t), "b": pair(t, t), "c": t})
    assert list(out) == ["a.0", "a.1", "b.logits", "b.hidden", "c"]
    assert list(flatten_outputs(t)) == ["output"]


def test_zipmap_rows_become_columns_in_label_order() -> None:
    rows = [{2: 0.2, 0: 0.5, 1: 0.3}, {0: 0.1, 1: 0.1, 2: 0.8}]
    np.testing.assert_allclose(zipmap_array(rows), [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    info = describe("output_probability", rows, rows=2, declared="seq(map(int64,float))")
    assert info.public() == {
        "name": "output_probability",
        "dtype": "seq(map(int64,float))",
        "shape": [None, 3],
    }
    assert info.scores and info.zipmap


def test_describe_marks_only_float_batch_by_classes_tensors_as_scores() -> None:
    assert describe("p", np.zeros((4, 3), np.float32), rows=4).scores
    assert describe("p", np.zeros((4, 3), np.float64), rows=4).dtype == "float64"
    label = describe("label", np.zeros(4, np.int64), rows=4)
    assert (label.scores, label.shape) == (False, [None])
    assert not describe("one", np.zeros((4, 1), np.float32), rows=4).scores
    assert not describe("names", np.array(["a"] * 4, dtype=object), rows=4).scores


def test_pick_ignores_the_label_output_and_says_so() -> None:
    outputs = [_info("label", [None], "int64"), _info("probabilities", [None, 10])]
    chosen, why = pick_output(outputs, None)
    assert chosen.name == "probabilities"
    assert "only float [N, classes] output" in why and "label int64 [N]" in why


def test_pick_prefers_the_output_named_logits() -> None:
    outputs = [_info("embedding", [None, 32]), _info("logits", [None, 10])]
    assert pick_output(outputs, None)[0].name == "logits"


def test_several_float_outputs_ask_for_output_name_listing_them() -> None:
    outputs = [
        _info("scores", [None, 10]),
        _info("probabilities", [None, 10]),
        _info("embedding", [None, 128]),
    ]
    with pytest.raises(UserError) as caught:
        pick_output(outputs, None)
    assert caught.value.code == "ambiguous_output"
    assert caught.value.message.startswith(
        "the teacher has 3 float outputs: scores [N,10], probabilities [N,10], "
        "embedding [N,128]; pass output_name"
    )
    assert pick_output(outputs, "probabilities")[0].name == "probabilities"


def test_output_name_must_exist_and_be_float_scores() -> None:
    outputs = [_info("label", [None], "int64"), _info("probabilities", [None, 10])]
    with pytest.raises(UserError, match="'nope' is not an output.*label int64 \\[N\\]"):
        pick_output(outputs, "nope")
    with pytest.raises(UserError, match="'label' is label int64 \\[N\\], not float"):
        pick_output(outputs, "label")


def test_no_float_output_is_refused_with_what_was_returned() -> None:
    with pytest.raises(UserError, match="no float \\[N, classes\\] output.*label int64"):
        pick_output([_info("label", [None], "int64")], None)


def test_kind_is_detected_from_the_rows() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    info = _info("out", [None, 3])
    assert detect_kind(info, logits, "auto")[0] == "logits"
    assert detect_kind(info, logits.softmax(-1), "auto")[0] == "probabilities"
    assert detect_kind(info, logits.log_softmax(-1), "auto")[0] == "log_probabilities"
    # A row of zeros sums to 0 and has logsumexp log 3: logits, not either of the others.
    assert detect_kind(info, torch.zeros(2, 3), "auto")[0] == "logits"


def test_requested_kind_wins_but_must_fit_the_values() -> None:
    info = _info("out", [None, 3])
    probs = torch.tensor([[0.2, 0.3, 0.5]])
    kind, why = detect_kind(info, probs, "logits")
    assert kind == "logits" and "given at upload" in why
    with pytest.raises(UserError, match="negative values"):
        detect_kind(info, torch.tensor([[-1.0, 2.0, 0.0]]), "probabilities")
    with pytest.raises(UserError, match="positive values"):
        detect_kind(info, probs, "log_probabilities")


def test_probability_scores_give_back_the_probabilities_under_softmax() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1, 0.0]])
    scores = to_scores(p, "probabilities")
    assert torch.isfinite(scores).all()
    assert float(scores[0, 3]) == pytest.approx(LOG_PROB_FLOOR)
    # softmax(log p) = p, up to the floor's mass on the zero class.
    torch.testing.assert_close(scores.softmax(-1), p, atol=2 * PROB_FLOOR, rtol=0)
    torch.testing.assert_close(to_scores(p.clamp_min(1e-9).log(), "log_probabilities"), scores)


def test_temperature_softens_probabilities_as_p_to_the_one_over_t() -> None:
    p = torch.tensor([[0.6, 0.3, 0.1]])
    expected = p ** (1 / 4)
    expected = expected / expected.sum()
    torch.testing.assert_close(soft_targets(to_scores(p, "probabilities"), 4.0), expected)


def test_logits_pass_through_as_float32() -> None:
    z = torch.tensor([[3.0, -2.0]], dtype=torch.float64)
    out = to_scores(z, "logits")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, z.float())
