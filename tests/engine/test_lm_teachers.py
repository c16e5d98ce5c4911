"""Language-model teachers are detected in validation: one float [N, L, vocab] output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.teachers import inspect_teacher, load_teacher
from tests.engine.lm_helpers import VOCAB, export_onnx, export_pt2, train_lm
from tests.engine.text_helpers import export_onnx as export_classifier
from tests.engine.text_helpers import train_teacher


@pytest.fixture(scope="module")
def lm() -> nn.Module:
    return train_lm(steps=20)


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
def test_a_causal_lm_validates_as_a_language_model(lm: nn.Module, tmp_path: Path, fmt: str) -> None:
    path = (
        export_onnx(lm, tmp_path / "lm.onnx")
        if fmt == "onnx"
        else export_pt2(lm, tmp_path / "lm.pt2")
    )
    info = inspect_teacher(path, fmt)
    assert info["task"] == "language_model"
    assert info["input_kind"] == "tokens"
    assert info["num_classes"] == VOCAB
    assert info["vocab_size"] == VOCAB
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask"]
    assert info["output_name"] == ("logits" if fmt == "onnx" else "output")
    assert "language model" in info["output_reason"]
    # The loaded teacher returns [N, L, vocab] scores on any length, like the model itself.
    teacher = load_teacher(path, fmt)
    x = torch.zeros(3, 2, 7, dtype=torch.int64)
    x[:, 0] = torch.randint(1, VOCAB, (3, 7))
    x[:, 1] = 1
    got = teacher(x)
    assert list(got.shape) == [3, 7, VOCAB]
    with torch.no_grad():
        expected = lm(x[:, 0], x[:, 1])
    assert torch.allclose(got, expected, atol=1e-4)


def test_a_classifier_stays_a_classifier(tmp_path: Path) -> None:
    info = inspect_teacher(export_classifier(train_teacher(), tmp_path / "c.onnx"), "onnx")
    assert info["task"] == "classification"
