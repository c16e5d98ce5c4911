"""The engine with kd_jacobian and augmentation: the teacher runs online, the report says
what trained the student, and a stopped job resumes to the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core.contracts import Outcome
from core.spec import JobSpec
from engine import trainer
from engine.engine import distill
from engine.errors import Stopped
from tests.engine.helpers import ModuleTeacher, digits_split, fit


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, ...]:
    """Digits as 1 × 8 × 8 images (shifts and flips need a known 2-D layout)."""
    x, y, xe, ye = digits_split()
    return x[:300].view(-1, 1, 8, 8), y[:300], xe[:120].view(-1, 1, 8, 8), ye[:120]


@pytest.fixture(scope="module")
def teacher(images: tuple[torch.Tensor, ...]) -> nn.Module:
    x, y, _, _ = images
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))
    return fit(net, x, y, epochs=8)


def _spec(**extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "student": {"architecture": "mlp", "hidden": [32]},
            "training": {"epochs": 2, "batch_size": 64, "seed": 1},
            "export_formats": ["safetensors"],
        }
        | extra
    )


def _run(
    tmp: Path, teacher: nn.Module, images: tuple[torch.Tensor, ...], spec: JobSpec, **kw: Any
) -> Outcome:
    x, y, xe, ye = images
    return distill(
        [ModuleTeacher(teacher, 10, [None, 1, 8, 8])],
        x,
        y,
        xe,
        ye,
        spec,
        workdir=tmp / "work",
        cache_dir=tmp / "cache",
        device=torch.device("cpu"),
        checkpoint_every=3,
        **kw,
    )


JACOBIAN_AUGMENTED = {
    "distillation": {"loss": "kd_jacobian", "jacobian_weight": 0.5},
    "augmentation": {"shift": 1, "flip": True, "mixup": 0.2, "noise": 0.05},
}


def test_the_report_says_which_loss_and_augmentation_ran(
    tmp_path: Path, teacher: nn.Module, images: tuple[torch.Tensor, ...]
) -> None:
    report = _run(tmp_path, teacher, images, _spec(**JACOBIAN_AUGMENTED)).report
    assert report.loss == "kd_jacobian" and report.jacobian_weight == 0.5
    assert report.augmentation is not None
    assert report.augmentation.model_dump(mode="json") == {
        "shift": 1,
        "flip": True,
        "mixup": 0.2,
        "noise": 0.05,
        "munge": 0.0,
        "munge_scale": 10.0,
    }
    assert report.soft_labels == "online"  # cached labels were asked for by default
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    plain = _run(tmp_path / "plain", teacher, images, _spec()).report
    assert (plain.loss, plain.jacobian_weight, plain.augmentation) == ("kd", None, None)
    assert plain.soft_labels == "cached"


def test_a_stopped_kd_jacobian_job_with_augmentation_resumes_to_the_same_bytes(
    tmp_path: Path,
    teacher: nn.Module,
    images: tuple[torch.Tensor, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trainer, "STOP_CHECK_EVERY_S", 0.0)  # asked before every step
    spec = _spec(**JACOBIAN_AUGMENTED)
    straight = _run(tmp_path / "straight", teacher, images, spec)
    calls = {"n": 0}

    def stop_once() -> bool:
        calls["n"] += 1
        return calls["n"] == 4

    events: list[dict[str, Any]] = []
    with pytest.raises(Stopped):
        _run(tmp_path / "resumed", teacher, images, spec, should_stop=stop_once)
    resumed = _run(tmp_path / "resumed", teacher, images, spec, on_event=events.append)
    assert events[0]["event"] == "resumed" and events[0]["step"] == 3
    assert resumed.files["safetensors"].read_bytes() == straight.files["safetensors"].read_bytes()


def test_an_onnx_teacher_runs_in_onnxruntime_on_each_augmented_batch(tmp_path: Path) -> None:
    """No gradients needed: augmentation works with any teacher the engine can run."""
    from engine.teachers import load_teacher
    from tests.factories import digits
    from tests.teacher_exports import sklearn_onnx_bytes

    path = tmp_path / "mlp.onnx"
    path.write_bytes(sklearn_onnx_bytes("mlp", zipmap=False))
    onnx_teacher = load_teacher(path, "onnx", device="cpu")
    x, _, xe, ye = (torch.from_numpy(a) for a in digits())
    spec = _spec(augmentation={"mixup": 0.2, "noise": 0.02}, training={"epochs": 6})
    report = distill(
        [onnx_teacher],
        x,
        None,
        xe,
        ye,
        spec,
        workdir=tmp_path / "work",
        cache_dir=None,
        device=torch.device("cpu"),
    ).report
    assert report.soft_labels == "online" and report.loss == "kd"
    assert report.augmentation is not None
    assert report.augmentation.model_dump(mode="json") == {
        "shift": 0,
        "flip": False,
        "mixup": 0.2,
        "noise": 0.02,
        "munge": 0.0,
        "munge_scale": 10.0,
    }
    assert report.agreement_top1 > 0.5  # 0.61 measured in 6 epochs; chance is 0.1


def test_a_stopped_munge_job_resumes_to_the_same_bytes(
    tmp_path: Path,
    teacher: nn.Module,
    images: tuple[torch.Tensor, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trainer, "STOP_CHECK_EVERY_S", 0.0)
    tabular = tuple(t.flatten(1) if t.dim() > 1 else t for t in images)
    spec = _spec(augmentation={"munge": 0.5, "mixup": 0.2})

    def run(folder: str, **kw: Any) -> Outcome:
        x, y, xe, ye = tabular
        return distill(
            [ModuleTeacher(teacher, 10, [None, 64])],  # it flattens its input
            x,
            y,
            xe,
            ye,
            spec,
            workdir=tmp_path / folder,
            cache_dir=None,
            device=torch.device("cpu"),
            checkpoint_every=3,
            **kw,
        )

    straight = run("straight")
    assert straight.report.augmentation.munge == 0.5
    calls = {"n": 0}

    def stop_once() -> bool:
        calls["n"] += 1
        return calls["n"] == 4

    with pytest.raises(Stopped):
        run("resumed", should_stop=stop_once)
    resumed = run("resumed")
    assert resumed.files["safetensors"].read_bytes() == straight.files["safetensors"].read_bytes()
