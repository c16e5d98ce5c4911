"""The registry: builders, exact parameter counts, auto sizing, the API's catalog."""

from __future__ import annotations

import pytest
import torch

from core.spec import ARCHITECTURES
from core.students import catalog
from engine.errors import UserError
from engine.students import (
    REGISTRY,
    TokenShape,
    build_student,
    config_from_dict,
    config_to_dict,
    count_parameters,
    floored_target,
    size_student,
    student_target,
)
from engine.students.layers import Standardize

SHAPES = {
    "mlp": (64,),
    "cnn": (3, 16, 16),
    "cnn1d": (2, 40),
    "resnet": (3, 16, 16),
    "mobilenetv2": (1, 16, 16),
}


TENSOR_STUDENTS = sorted(n for n, e in REGISTRY.items() if e.token_families is None)


@pytest.mark.parametrize("name", TENSOR_STUDENTS)
@pytest.mark.parametrize("width", [1, 7, 32])
def test_built_student_has_the_counted_parameters_and_output_shape(name: str, width: int) -> None:
    entry = REGISTRY[name]
    config = entry.families[0](SHAPES[name], 7, width)
    model = build_student(name, config)
    assert count_parameters(model) == entry.parameters(config)
    assert model(torch.randn(5, *SHAPES[name])).shape == (5, 7)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((64,), "mlp"), ((1, 8, 8), "cnn"), ((3, 100), "cnn1d"), ((2, 3, 4, 5), "mlp")],
)
def test_auto_picks_by_input_rank_and_lands_within_25_percent(
    shape: tuple[int, ...], expected: str
) -> None:
    name, config = size_student("auto", shape, 10, target=20_000, cap=200_000)
    assert name == expected
    assert abs(REGISTRY[name].parameters(config) - 20_000) <= 0.25 * 20_000


def test_auto_falls_back_to_mlp_when_a_cnn_cannot_be_that_small() -> None:
    name, config = size_student("auto", (1, 2, 2), 3, target=30, cap=40)
    assert name == "mlp"
    assert REGISTRY["mlp"].parameters(config) <= 40


def test_target_is_size_ratio_of_teacher_capped_by_max_parameters_and_teacher() -> None:
    assert student_target(1_000_000, 0.1, None) == (100_000.0, 1_000_000)
    assert student_target(1_000_000, 0.1, 50_000) == (50_000.0, 50_000)
    assert student_target(None, 0.1, 5_000) == (5_000.0, 5_000)
    with pytest.raises(UserError):
        student_target(None, 0.1, None)


def test_a_vector_student_sized_by_ratio_is_at_least_two_units_a_class_wide() -> None:
    # digits' 64-unit MLP teacher (4,810 parameters): a tenth is a 6-6 student; floored, 20-20.
    target = floored_target(481.0, 4_810, "auto", (64,), 10)
    name, config = size_student("auto", (64,), 10, target=target, cap=4_810)
    assert name == "mlp" and config.hidden == (20, 20)
    assert floored_target(481.0, 4_810, "mlp", (64,), 10) == target
    # Kept: a target above the floor, a floor above the cap, images, other architectures.
    assert floored_target(30_000.0, 300_000, "auto", (64,), 10) == 30_000.0
    assert floored_target(481.0, 1_000, "auto", (64,), 10) == 481.0
    assert floored_target(481.0, 4_810, "auto", (1, 8, 8), 10) == 481.0
    assert floored_target(481.0, 4_810, "cnn1d", (64,), 10) == 481.0


def test_student_never_exceeds_the_cap() -> None:
    for target in (1_000, 10_000, 100_000, 1_500_000):
        name, config = size_student("auto", (64,), 10, target=target, cap=int(target * 1.01))
        assert REGISTRY[name].parameters(config) <= int(target * 1.01)


def test_impossible_size_is_a_user_error() -> None:
    with pytest.raises(UserError, match="smallest"):
        size_student("cnn", (3, 32, 32), 10, target=10, cap=10)
    with pytest.raises(UserError, match="does not fit"):
        size_student("cnn", (64,), 10, target=10_000, cap=100_000)


def test_config_json_rebuilds_the_same_module() -> None:
    name, config = size_student("auto", (1, 8, 8), 10, target=5_000, cap=50_000)
    same_name, same = config_from_dict(config_to_dict(name, config))
    assert (same_name, same) == (name, config)
    a, b = build_student(name, config), build_student(same_name, same)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


def test_standardize_fits_per_channel_and_floors_constant_features() -> None:
    layer = Standardize((2, 1, 1))
    x = (
        torch.stack([torch.full((4, 4), 3.0), torch.randn(4, 4) * 5])
        .unsqueeze(0)
        .repeat(16, 1, 1, 1)
    )
    x[:, 1] += torch.randn(16, 1, 1) * 5
    layer.fit(x)
    assert layer.mean[0].item() == pytest.approx(3.0)
    assert torch.isfinite(layer.inv_std).all()
    assert layer.inv_std[0].item() < 1e3  # a constant channel is not divided by ~0


def test_catalog_lists_exactly_the_registry() -> None:
    listed = {e["name"]: e for e in catalog()}
    assert set(listed) == {"auto", *REGISTRY}
    assert set(listed) == set(ARCHITECTURES)
    for name, entry in REGISTRY.items():
        assert listed[name]["input_ranks"] == list(entry.input_ranks or [])
        assert listed[name]["description"] == entry.description
        assert listed[name].get("min_side") == entry.min_side


TOKENS = TokenShape(("input_ids", "attention_mask"), 1000, ("int64", "int64"))


@pytest.mark.parametrize("name", ["text_cnn", "transformer"])
@pytest.mark.parametrize("factorised", [False, True])
def test_text_students_have_the_counted_parameters_and_ignore_padding(
    name: str, factorised: bool
) -> None:
    entry = REGISTRY[name]
    assert entry.token_families is not None
    config = entry.token_families(TOKENS, factorised)[0]((2, 9), 4, 3)
    model = build_student(name, config).eval()
    assert count_parameters(model) == entry.parameters(config)
    ids = torch.randint(1, 1000, (5, 9))
    mask = torch.ones_like(ids)
    mask[:, 6:] = 0
    x = torch.stack([ids, mask], 1).float()
    out = model(x)
    assert out.shape == (5, 4)
    # What the padding holds changes nothing: only unmasked tokens are read.
    other = x.clone()
    other[:, 0, 6:] = 7
    assert torch.allclose(model(other), out, atol=1e-6)


def test_auto_picks_a_text_cnn_for_token_teachers_and_factorises_a_dominant_vocabulary() -> None:
    tokens = TokenShape(("input_ids", "attention_mask"), 30_000)
    name, config = size_student("auto", (2, 64), 5, target=500_000, cap=5_000_000, tokens=tokens)
    assert name == "text_cnn" and config.factor > 0
    assert abs(REGISTRY[name].parameters(config) - 500_000) <= 0.25 * 500_000
    small = TokenShape(("input_ids",), 100)
    name, config = size_student("transformer", (1, 64), 5, target=50_000, cap=500_000, tokens=small)
    assert name == "transformer" and config.factor == 0


def test_tensor_students_refuse_token_teachers() -> None:
    with pytest.raises(UserError, match="does not take token inputs"):
        size_student("mlp", (2, 64), 5, target=5_000, cap=50_000, tokens=TOKENS)


@pytest.mark.parametrize("factorised", [False, True])
def test_the_gpt_student_is_causal_tied_and_counted(factorised: bool) -> None:
    entry = REGISTRY["gpt"]
    assert entry.token_families is not None
    lm = TokenShape(("input_ids", "attention_mask"), 1000, language_model=True)
    config = entry.token_families(lm, factorised)[0]((2, 9), 1000, 2)
    model = build_student("gpt", config).eval()
    assert count_parameters(model) == entry.parameters(config)
    ids = torch.randint(1, 1000, (3, 9))
    mask = torch.ones_like(ids)
    mask[:, 6:] = 0
    x = torch.stack([ids, mask], 1).float()
    out = model(x)
    assert out.shape == (3, 9, 1000)  # next-token logits over the vocabulary, a position
    # Causal: changing token 4 changes no logit before it, and some at or after it.
    later = x.clone()
    later[:, 0, 4] = (later[:, 0, 4] % 999) + 1
    changed = model(later)
    assert torch.equal(changed[:, :4], out[:, :4])
    assert not torch.allclose(changed[:, 4:6], out[:, 4:6])
    # Padding is never read by a real position.
    padded = x.clone()
    padded[:, 0, 6:] = 5
    assert torch.allclose(model(padded)[:, :6], out[:, :6], atol=1e-6)
    # Tied: the output layer is the embedding table (no separate head).
    assert all("head" not in name for name, _ in model.named_parameters())


def test_auto_picks_gpt_for_a_language_model_and_only_for_one() -> None:
    lm = TokenShape(("input_ids", "attention_mask"), 500, language_model=True)
    name, config = size_student("auto", (2, 32), 500, target=100_000, cap=1_000_000, tokens=lm)
    assert name == "gpt" and config.vocab_size == 500
    assert abs(REGISTRY[name].parameters(config) - 100_000) <= 0.25 * 100_000
    with pytest.raises(UserError, match="no language model"):
        size_student("transformer", (2, 32), 500, target=100_000, cap=1_000_000, tokens=lm)
    with pytest.raises(UserError, match="needs a language-model teacher"):
        size_student("gpt", (2, 32), 5, target=100_000, cap=1_000_000, tokens=TOKENS)
