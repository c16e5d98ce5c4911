"""Quality on real data: scikit-learn's digits, 60 % transfer (unlabeled) / 40 % held out.

A 64-1200-1200-10 MLP teacher (1.53 M parameters) and a small CNN teacher on 1×8×8 images
are distilled with the default spec into an ``auto`` student at size_ratio 0.1. Next to
each, the same student trained by the same loop on hard labels alone (alpha = 1, the 60 %
with labels) is printed as the baseline; the thresholds are the product's promises, not
tuned to these runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from core.contracts import Report
from core.spec import JobSpec
from engine.engine import distill
from tests.engine.helpers import ModuleTeacher, cnn_teacher, digits_split, fit, mlp_teacher


def _job(alpha: float = 0.1, export: str = "onnx") -> JobSpec:
    return JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "student": {"architecture": "auto", "size_ratio": 0.1},
            "distillation": {"alpha": alpha},
            "export_formats": [export],
        }
    )


def _distil_and_baseline(
    tmp: Path, teacher: nn.Module, shape: list[int | None], images: bool
) -> tuple[Report, Report]:
    x, y, xe, ye = digits_split(seed=0)
    if images:
        x, xe = x.view(-1, 1, 8, 8), xe.view(-1, 1, 8, 8)
    teacher = fit(teacher, x, y, epochs=30, seed=0)
    wrapped = ModuleTeacher(teacher, 10, shape)
    distilled = distill([wrapped], x, None, xe, ye, _job(), workdir=tmp / "kd", cache_dir=None)
    # Baseline: the same student and loop, trained on the hard labels alone (alpha = 1).
    hard = distill(
        [wrapped],
        x,
        y,
        xe,
        ye,
        _job(alpha=1.0, export="safetensors"),
        workdir=tmp / "hard",
        cache_dir=None,
    )
    kd, base = distilled.report, hard.report
    print(
        f"\n{'CNN' if images else 'MLP'} teacher {kd.teacher.parameters} params, "
        f"acc {kd.teacher_accuracy:.4f} | student {kd.student.parameters} params "
        f"({kd.student_architecture['architecture']}): distilled agreement "
        f"{kd.agreement_top1:.4f} acc {kd.student_accuracy:.4f} KL {kd.kl_divergence:.4f}"
        f" | hard labels only: agreement {base.agreement_top1:.4f} acc "
        f"{base.student_accuracy:.4f}"
    )
    return kd, base


def _check(kd: Report, agreement: float) -> None:
    assert kd.agreement_top1 >= agreement
    assert kd.student_accuracy >= kd.teacher_accuracy - 0.02
    assert kd.compression_ratio >= 5


@pytest.mark.slow
def test_mlp_teacher_distils_into_an_auto_student(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kd, _ = _distil_and_baseline(tmp_path, mlp_teacher(), [None, 64], images=False)
    assert kd.teacher.parameters == 1_531_210
    _check(kd, 0.95)


@pytest.mark.slow
def test_cnn_teacher_distils_into_an_auto_student(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kd, _ = _distil_and_baseline(tmp_path, cnn_teacher(), [None, 1, 8, 8], images=True)
    assert kd.student_architecture["architecture"] == "cnn"
    _check(kd, 0.95)


pytestmark = [pytest.mark.filterwarnings("error")]
