"""Soft labels: computed once, stored in fp16 (or top-k), keyed, reused."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.soft_labels import (
    cache_key,
    compute_soft_labels,
    load_soft_labels,
    save_soft_labels,
)
from tests.engine.helpers import ModuleTeacher
from worker.checkpoint_sync import soft_labels_file

CPU = torch.device("cpu")


def _teacher(seed: int, classes: int = 5) -> ModuleTeacher:
    torch.manual_seed(seed)
    return ModuleTeacher(nn.Linear(8, classes), classes, [None, 8])


def test_stored_logits_are_the_teachers_in_fp16() -> None:
    teachers, x = [_teacher(0), _teacher(1)], torch.randn(50, 8)
    labels = compute_soft_labels(teachers, x, CPU, top_k=None, batch_size=16)
    assert labels.logits is not None and labels.logits.dtype == torch.float16
    for k, teacher in enumerate(teachers):
        assert torch.allclose(labels.batch(torch.arange(50))[k], teacher(x), atol=1e-2)


def test_top_k_keeps_exact_top_probabilities_and_remaining_mass_at_t1() -> None:
    teacher, x = _teacher(0, classes=20), torch.randn(30, 8) * 3
    labels = compute_soft_labels([teacher], x, CPU, top_k=3, batch_size=7)
    assert labels.logits is None
    full, approx = teacher(x).softmax(-1), labels.batch(torch.arange(30))[0].softmax(-1)
    top = full.topk(3, dim=-1).indices
    assert torch.allclose(approx.gather(-1, top), full.gather(-1, top), atol=2e-3)
    rest = 1 - full.gather(-1, top).sum(-1)
    assert torch.allclose(1 - approx.gather(-1, top).sum(-1), rest, atol=2e-3)


def test_cache_round_trip_and_key_mismatch(tmp_path: Path) -> None:
    labels = compute_soft_labels([_teacher(0)], torch.randn(10, 8), CPU, top_k=None, batch_size=4)
    key = cache_key(["a"], "d", sample_shape=[8], mean=None, std=None, top_k=None)
    path = soft_labels_file(tmp_path, key)
    save_soft_labels(labels, path, key)
    loaded = load_soft_labels(path, key, 10)
    assert loaded is not None and torch.equal(loaded.logits, labels.logits)  # type: ignore[arg-type]
    assert load_soft_labels(path, "other", 10) is None
    assert load_soft_labels(path, key, 11) is None
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_corrupt_cache_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"not a safetensors file")
    assert load_soft_labels(path, "k", 1) is None


def test_key_depends_on_teacher_order_data_preprocessing_and_top_k() -> None:
    base = {"sample_shape": [8], "mean": None, "std": None, "top_k": None}
    key = cache_key(["a", "b"], "d", **base)  # type: ignore[arg-type]
    assert key == cache_key(["a", "b"], "d", **base)  # type: ignore[arg-type]
    assert key != cache_key(["b", "a"], "d", **base)  # type: ignore[arg-type]
    assert key != cache_key(["a", "b"], "e", **base)  # type: ignore[arg-type]
    assert key != cache_key(["a", "b"], "d", **(base | {"mean": [0.5], "std": [0.2]}))  # type: ignore[arg-type]
    assert key != cache_key(["a", "b"], "d", **(base | {"top_k": 5}))  # type: ignore[arg-type]
