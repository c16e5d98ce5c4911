"""Teachers as other tools export them load, pick the right output and kind, and reproduce
the model they came from: skl2onnx (ZipMap or not, tree ensembles, float64) and torch.export
models that end in softmax or return a dict."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import UserError
from engine.soft_labels import teacher_logits
from engine.teachers import inspect_teacher, load_teacher
from tests.factories import digits, save_pt2
from tests.teacher_exports import (
    SKLEARN_KINDS,
    sklearn_model,
    sklearn_onnx_bytes,
    torch_pt2_bytes,
    torch_teacher,
)


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
@pytest.mark.parametrize("kind", SKLEARN_KINDS)
def test_skl2onnx_classifier_gives_its_probabilities(
    kind: str, zipmap: bool, tmp_path: Path
) -> None:
    path = _write(tmp_path, "t.onnx", sklearn_onnx_bytes(kind, zipmap=zipmap))
    info = inspect_teacher(path, "onnx")
    label, probabilities = info["outputs"]
    assert label["dtype"] == "int64" and label["shape"] == [None]
    expected_dtype = "seq(map(int64,float))" if zipmap else "float32"
    assert probabilities == {
        "name": "output_probability" if zipmap else "probabilities",
        "dtype": expected_dtype,
        "shape": [None, 10],
    }
    assert info["output_name"] == probabilities["name"]
    assert (info["output_kind"], info["num_classes"]) == ("probabilities", 10)
    assert "ignored: " + label["name"] in info["output_reason"]
    assert info["parameters"] > 0  # tree ensembles count thresholds and leaf values

    model = sklearn_model(kind)
    _, _, xe, _ = digits()
    scores = load_teacher(path, "onnx")(torch.from_numpy(xe))
    np.testing.assert_allclose(
        scores.softmax(-1).numpy(), model.predict_proba(xe), atol=1e-5, rtol=0
    )
    assert (scores.argmax(-1).numpy() == model.predict(xe)).all()


def test_float64_skl2onnx_teacher_is_fed_float64(tmp_path: Path) -> None:
    path = _write(tmp_path, "t64.onnx", sklearn_onnx_bytes("mlp", zipmap=False, float64=True))
    teacher = load_teacher(path, "onnx")
    assert teacher.input_dtype == "float64"
    assert [o.dtype for o in teacher.outputs] == ["int64", "float64"]
    _, _, xe, _ = digits()
    scores = teacher(torch.from_numpy(xe))  # float32 in, as datasets arrive
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(
        scores.softmax(-1).numpy(), sklearn_model("mlp").predict_proba(xe), atol=1e-5, rtol=0
    )


def test_float64_pt2_teacher_is_fed_float64_online_too(tmp_path: Path) -> None:
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).double().eval()
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(
            model, (torch.zeros(2, 64, dtype=torch.float64),), dynamic_shapes=({0: batch},)
        )
    path = tmp_path / "double.pt2"
    torch.export.save(program, str(path))
    teacher = load_teacher(path, "torch_export")
    assert teacher.input_dtype == "float64" and teacher.outputs[0].dtype == "float64"
    x = torch.from_numpy(digits()[2][:20])
    expected = model(x.double()).detach().float()
    torch.testing.assert_close(teacher(x), expected)
    online = teacher_logits(teacher, x, torch.device("cpu"), online=True)
    torch.testing.assert_close(online, expected)


def test_softmax_headed_pt2_is_read_as_probabilities(tmp_path: Path) -> None:
    path = _write(tmp_path, "soft.pt2", torch_pt2_bytes("softmax"))
    teacher = load_teacher(path, "torch_export")
    assert (teacher.output_name, teacher.output_kind) == ("output", "probabilities")
    x = torch.from_numpy(digits()[2][:50])
    probs = torch_teacher("softmax")(x).detach()
    # Scores are log p: softmax gives p back, in the wrapper and in the online module alike.
    torch.testing.assert_close(teacher(x).softmax(-1), probs, atol=1e-6, rtol=0)
    online = teacher_logits(teacher, x, torch.device("cpu"), online=True)
    torch.testing.assert_close(online, teacher(x))


def test_dict_returning_pt2_uses_its_logits_entry(tmp_path: Path) -> None:
    path = _write(tmp_path, "dict.pt2", torch_pt2_bytes("dict"))
    info = inspect_teacher(path, "torch_export")
    assert info["outputs"] == [
        {"name": "embedding", "dtype": "float32", "shape": [None, 32]},
        {"name": "logits", "dtype": "float32", "shape": [None, 10]},
    ]
    assert (info["output_name"], info["output_kind"]) == ("logits", "logits")
    assert "named 'logits'" in info["output_reason"]
    x = torch.from_numpy(digits()[2][:50])
    expected = torch_teacher("dict")(x)["logits"].detach()
    torch.testing.assert_close(load_teacher(path, "torch_export")(x), expected)


class _ThreeHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scores = nn.Linear(64, 10)
        self.embed = nn.Linear(64, 128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.scores(x)
        return z, z.log_softmax(-1), self.embed(x)


def test_several_float_outputs_need_output_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = save_pt2(_ThreeHeads().eval(), tmp_path / "three.pt2")
    with pytest.raises(UserError) as caught:
        load_teacher(path, "torch_export")
    assert caught.value.code == "ambiguous_output"
    assert "3 float outputs: 0 [N,10], 1 [N,10], 2 [N,128]; pass output_name" in str(caught.value)
    teacher = load_teacher(path, "torch_export", output_name="1")
    assert (teacher.output_name, teacher.output_kind) == ("1", "log_probabilities")


def test_output_kind_given_at_upload_overrides_detection(tmp_path: Path) -> None:
    path = _write(tmp_path, "soft.pt2", torch_pt2_bytes("softmax"))
    teacher = load_teacher(path, "torch_export", output_kind="logits")
    assert teacher.output_kind == "logits"
    assert "given at upload" in teacher.output_reason
    x = torch.from_numpy(digits()[2][:5])
    torch.testing.assert_close(teacher(x), torch_teacher("softmax")(x).detach())


def test_output_name_that_is_the_label_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "t.onnx", sklearn_onnx_bytes("mlp", zipmap=False))
    with pytest.raises(UserError, match="'label' is label int64 \\[N\\], not float"):
        load_teacher(path, "onnx", output_name="label")
