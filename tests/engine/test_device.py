"""The device-dependent choices, checked on the CPU: teacher batch sizes, a teacher batch
halved when CUDA memory runs out, channels-last training, the device's name in the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import trainer
from engine.device import (
    MAX_CUDA_BATCH,
    as_channels_last,
    device_name,
    inference_batch,
    uses_channels_last,
)
from engine.losses import soft_targets
from engine.soft_labels import compute_soft_labels
from engine.trainer import TrainConfig, train
from tests.engine.helpers import ModuleTeacher

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
GiB = 1 << 30


def test_teacher_batches_hold_64_mib_on_the_cpu_and_a_share_of_free_memory_on_cuda() -> None:
    assert inference_batch((784,), CPU) == 8192  # capped
    assert inference_batch((3, 224, 224), CPU) == (1 << 24) // (3 * 224 * 224)
    # 139 GiB free, 1/64 of it for 3x224x224 fp32 inputs: 3,873 rows.
    assert inference_batch((3, 224, 224), CUDA, free_bytes=139 * GiB) == 3873
    assert inference_batch((784,), CUDA, free_bytes=139 * GiB) == MAX_CUDA_BATCH
    assert inference_batch((3, 1024, 1024), CUDA, free_bytes=1 << 20) == 1  # never zero
    # Token rows [K, L]: sized in tokens (a transformer's activations, not its input ids).
    assert inference_batch((3, 32), CPU) == 8192
    assert inference_batch((3, 32), CPU, tokens=True) == 512
    assert inference_batch((2, 128), CPU, tokens=True) == 128
    assert inference_batch((2, 100_000), CPU, tokens=True) == 1  # never zero
    assert inference_batch((3, 32), CUDA, free_bytes=139 * GiB, tokens=True) == 4096


@dataclass
class RunsOutAbove(ModuleTeacher):
    """A teacher whose device has room for at most ``rows`` rows a call."""

    rows: int = 8
    calls: list[int] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert self.calls is not None
        self.calls.append(len(x))
        if len(x) > self.rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().__call__(x)


def test_a_teacher_batch_that_runs_out_of_memory_is_halved_for_the_rest() -> None:
    torch.manual_seed(0)
    module, x = nn.Linear(8, 5), torch.randn(50, 8)
    calls: list[int] = []
    teacher = RunsOutAbove(module, 5, [None, 8], calls=calls)
    labels = compute_soft_labels([teacher], x, CPU, top_k=None, batch_size=32)
    assert calls[:3] == [32, 16, 8] and max(calls[3:]) == 8 and sum(calls[2:]) == 50
    plain = compute_soft_labels(
        [ModuleTeacher(module, 5, [None, 8])], x, CPU, top_k=None, batch_size=50
    )
    assert labels.logits is not None and torch.equal(labels.logits, plain.logits)
    teacher.rows = 0
    with pytest.raises(torch.cuda.OutOfMemoryError):
        compute_soft_labels([teacher], x, CPU, top_k=None, batch_size=4)


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


def test_cnn_students_train_channels_last_where_it_applies_and_end_in_the_usual_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not uses_channels_last(_cnn(), CPU)
    assert uses_channels_last(_cnn(), CUDA) and not uses_channels_last(nn.Linear(4, 2), CUDA)
    x = torch.randn(4, 1, 4, 4)
    assert as_channels_last(x).is_contiguous(memory_format=torch.channels_last)
    assert as_channels_last(torch.randn(4, 16)).is_contiguous()

    torch.manual_seed(2)
    x, t = torch.randn(64, 1, 4, 4), torch.randn(1, 64, 3)
    cfg = TrainConfig(
        epochs=2,
        batch_size=16,
        learning_rate=1e-2,
        weight_decay=0.0,
        warmup_fraction=0.1,
        temperature=2.0,
        alpha=0.0,
        seed=3,
        checkpoint_every=0,
    )

    def fit(model: nn.Module, folder: str) -> nn.Module:
        train(
            model,
            x,
            None,
            lambda idx, xb: soft_targets(t[:, idx], 2.0),
            cfg,
            device=CPU,
            workdir=tmp_path / folder,
            fingerprint="job",
        )
        return model

    plain = fit(_cnn(), "plain")
    # The CUDA rule, forced on the CPU (whose convolutions also take NHWC).
    monkeypatch.setattr(trainer, "uses_channels_last", lambda model, device: True)
    nhwc = fit(_cnn(), "nhwc")
    for (name, a), b in zip(plain.state_dict().items(), nhwc.state_dict().values(), strict=True):
        assert b.is_contiguous(), name
        assert torch.allclose(a.float(), b.float(), atol=1e-4), name


def test_the_report_names_the_cpu() -> None:
    name = device_name(CPU)
    assert name and name != "cpu" or Path("/proc/cpuinfo").exists() is False
