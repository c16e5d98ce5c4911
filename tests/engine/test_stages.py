"""The engine's stages one at a time, and the whole chain on a memory-mapped set."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
import torch
from torch import nn

from core.spec import JobSpec, LossName, TrainingSpec
from engine import engine, rows, stages, targets, trainer
from engine.data import open_dataset
from engine.errors import Stopped, UserError
from engine.lm_losses import SEQUENCE_LOSSES
from engine.losses import INPUT_GRADIENT_LOSSES, LOSSES, kd_loss
from engine.rows import ArrayRows
from engine.soft_labels import compute_soft_labels
from tests.engine.helpers import ModuleTeacher, digits_split, fit

CPU = torch.device("cpu")


def _spec(**training: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "training": {"epochs": 2, "batch_size": 64, "seed": 1} | training,
            "export_formats": ["safetensors"],
        }
    )


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    x, y, xe, ye = digits_split()
    return x[:400], y[:400], xe[:200], ye[:200]


@pytest.fixture(scope="module")
def teacher(digits: tuple[torch.Tensor, ...]) -> ModuleTeacher:
    x, y, _, _ = digits
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return ModuleTeacher(fit(module, x, y, epochs=5), 10, [None, 64])


def test_split_stage_holds_out_the_seeded_rows_without_an_eval_set() -> None:
    data = ArrayRows(np.arange(200, dtype=np.float32).reshape(100, 2))
    splits = stages.split_stage(data, None, TrainingSpec(eval_fraction=0.2, seed=3))
    assert splits.split is not None and splits.eval.num_samples == 20
    assert splits.train.num_samples == 80 and splits.transfer_samples == 100
    held = splits.split.eval.numpy()
    assert splits.eval.read(np.arange(20))[:, 0].tolist() == (2 * held).tolist()
    with_eval = stages.split_stage(data, data, TrainingSpec())
    assert with_eval.split is None and with_eval.train.num_samples == 100


def test_check_inputs_finds_a_nan_in_a_later_chunk(
    teacher: ModuleTeacher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows, "CHUNK_BYTES", 64 * 4 * 10)  # ten rows a chunk
    x = np.zeros((100, 64), dtype=np.float32)
    x[95, 3] = np.nan
    with pytest.raises(UserError, match="1 of 100 samples"):
        stages.check_inputs([teacher], ArrayRows(x), "dataset")
    stages.check_inputs([teacher], ArrayRows(np.zeros((100, 64), dtype=np.uint8)), "dataset")


def test_target_strategies_agree(teacher: ModuleTeacher) -> None:
    x = torch.randn(30, 64)
    soft = compute_soft_labels([teacher], x, CPU, top_k=None, batch_size=8)
    index = torch.arange(5, 30)
    kwargs: dict[str, Any] = {"teachers": [teacher], "index": index, "temperature": 2.0}
    precomputed = targets.make_targets(soft, device=CPU, **kwargs)
    online = targets.make_targets(None, device=CPU, **kwargs)
    assert isinstance(precomputed, targets.PrecomputedTargets)
    assert isinstance(online, targets.OnlineTargets)
    cached = targets.CachedTargets(soft, index, 2.0, CPU)
    idx = torch.tensor([3, 0, 7])
    xb = x[index[idx]]
    torch.testing.assert_close(cached(idx, xb), precomputed(idx, xb))
    torch.testing.assert_close(online(idx, xb), precomputed(idx, xb), atol=2e-3, rtol=0)


def test_the_loss_registry_names_the_specs_losses() -> None:
    assert LOSSES["kd"] is kd_loss
    # reverse_kl and jsd are language models' only: lm_losses.py computes them on sequences.
    assert set(LOSSES) | set(SEQUENCE_LOSSES) == set(get_args(LossName))
    assert set(INPUT_GRADIENT_LOSSES) == {"kd_jacobian"}


def _run(tmp: Path, teacher: ModuleTeacher, x: Any, xe: Any, ye: Any, **kw: Any) -> bytes:
    result = engine.distill(
        [teacher],
        x,
        None,
        xe,
        ye,
        kw.pop("spec", _spec()),
        workdir=tmp / "work",
        cache_dir=tmp / "cache",
        identity={"teachers": ["t"], "dataset": "d"},
        **kw,
    )
    return result.files["safetensors"].read_bytes()


def _streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every set read per batch from its map, targets softened per batch."""
    monkeypatch.setattr(stages, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(targets, "PRECOMPUTED_PROBS_BYTES", 0)


def test_a_mapped_set_trains_the_same_student_as_tensors_in_memory(
    tmp_path: Path, teacher: ModuleTeacher, digits: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _, xe, ye = digits
    in_memory = _run(tmp_path / "memory", teacher, x, xe, ye)
    np.save(tmp_path / "x.npy", x.numpy())
    np.savez(tmp_path / "eval.npz", x=xe.numpy(), y=ye.numpy())
    _streaming(monkeypatch)
    mapped = open_dataset(tmp_path / "x.npy", "npy", scratch=tmp_path / "s")
    held = open_dataset(tmp_path / "eval.npz", "npz", scratch=tmp_path / "e")
    assert _run(tmp_path / "mapped", teacher, mapped, held, None) == in_memory


def test_a_stopped_streaming_job_resumes_to_the_same_bytes(
    tmp_path: Path, teacher: ModuleTeacher, digits: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _, _, _ = digits
    _streaming(monkeypatch)
    monkeypatch.setattr(trainer, "STOP_CHECK_EVERY_S", 0.0)
    np.save(tmp_path / "x.npy", x.numpy())
    mapped = open_dataset(tmp_path / "x.npy", "npy", scratch=tmp_path / "s")
    job = _spec(epochs=3)
    straight = _run(tmp_path / "straight", teacher, mapped, None, None, spec=job)
    calls = {"n": 0}

    def stop_after_7_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    with pytest.raises(Stopped):
        _run(
            tmp_path / "resumed",
            teacher,
            mapped,
            None,
            None,
            spec=job,
            should_stop=stop_after_7_steps,
            checkpoint_every=4,
        )
    resumed = _run(tmp_path / "resumed", teacher, mapped, None, None, spec=job, checkpoint_every=4)
    assert resumed == straight
