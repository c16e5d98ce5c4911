"""A real image teacher into a MobileNetV2 student at 10× fewer parameters, through the service.

    python -m bench.image_quality --threads 1   # the real run (about 15 min on 2 CPU cores)
    python -m bench.image_quality --quick       # smoke run (tiny, about a minute)

Real MNIST as 1×28×28 images. A ResNet-style teacher (the service's own ``resnet`` builder
at width 32: three stages of two basic blocks, 32-64-128 channels, here with a stride-2
stem so that it trains in minutes on a CPU) is trained by this script on a subsample of
the 60,000 training images, exported with ``torch.export`` and uploaded as ``.pt2``. The
transfer set is a subsample of the training images *without labels*; the eval set is the
10,000 test images. One job distills the teacher into ``"architecture": "mobilenetv2"`` at
``size_ratio`` 0.1; the student is downloaded as ONNX and its agreement with the teacher and
its accuracy are counted here on the 10,000 test images with onnxruntime, next to the
service's own report. Nothing is tuned on the test images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from bench.data import load_mnist
from bench.service import (
    OUT,
    Service,
    machine,
    markdown_table,
    onnx_predict,
    save_npz,
    write_output,
)
from engine.students import init_student
from engine.students.resnet import ResNetConfig

SHAPE = (1, 28, 28)
REPORTED = (
    "teacher",
    "student",
    "compression_ratio",
    "agreement_top1",
    "teacher_accuracy",
    "student_accuracy",
    "eval_samples",
)


@dataclass(frozen=True)
class Plan:
    teacher_width: int
    teacher_samples: int  # training images the teacher sees (a fixed subsample)
    teacher_epochs: int
    transfer_samples: int  # unlabeled transfer set (the same subsample's first rows)
    student_epochs: int
    test_samples: int | None  # None: all 10,000
    temperature: float
    learning_rate: float


# T = 2: the temperature the validation split chose for every student in the Hinton MNIST
# benchmark (docs/benchmarks.md); lr 3e-3: what the image-student service test uses (the
# default 1e-3 is tuned for MLPs). Both fixed beforehand, not tuned on this run.
FULL = Plan(32, 20_000, 2, 20_000, 3, None, 2.0, 3e-3)
QUICK = Plan(16, 2_000, 3, 1_000, 1, 1_000, 2.0, 3e-3)


def teacher_config(plan: Plan) -> ResNetConfig:
    """Three stages of two basic blocks after a stride-2 stem: 28 → 14 → 7 → 4 pixels."""
    return ResNetConfig(SHAPE, 10, plan.teacher_width, blocks=2, stages=3, stem_downsamplings=1)


def train_teacher(x: torch.Tensor, y: torch.Tensor, plan: Plan, seed: int) -> nn.Module:
    """AdamW lr 2e-3 with a one-cycle schedule, batch 128, no augmentation."""
    model = init_student("resnet", teacher_config(plan), seed=seed, inputs=x)
    generator = torch.Generator().manual_seed(seed)
    steps = plan.teacher_epochs * math.ceil(len(x) / 128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    model.train()
    for epoch in range(plan.teacher_epochs):
        started = time.perf_counter()
        for idx in torch.randperm(len(x), generator=generator).split(128):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        print(
            f"  teacher epoch {epoch + 1}/{plan.teacher_epochs}: last loss {loss.item():.4f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return model.eval()


def export_teacher(model: nn.Module, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model, (torch.zeros(2, *SHAPE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(b).argmax(1) for b in x.split(1024)]).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--seed", type=int, default=0, help="teacher training and the job")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    name = "image_quality_quick" if args.quick else "image_quality"
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)

    data = load_mnist()
    order = np.random.default_rng(0).permutation(len(data.x_train))[: plan.teacher_samples]
    x_tr = data.x_train[order].reshape(-1, *SHAPE)
    y_tr = data.y_train[order]
    x_te = data.x_test[: plan.test_samples].reshape(-1, *SHAPE)
    y_te = data.y_test[: plan.test_samples]
    print(f"data: {data.source}; teacher {len(x_tr)} images, test {len(x_te)}", flush=True)

    t0 = time.perf_counter()
    teacher = train_teacher(torch.from_numpy(x_tr), torch.from_numpy(y_tr), plan, args.seed)
    teacher_s = time.perf_counter() - t0
    teacher_pred = predict(teacher, torch.from_numpy(x_te))
    teacher_params = sum(p.numel() for p in teacher.parameters())
    print(
        f"teacher: {teacher_params:,} parameters, test accuracy "
        f"{np.mean(teacher_pred == y_te):.4f} ({teacher_s:.0f} s)",
        flush=True,
    )
    pt2 = export_teacher(teacher, out / "teacher.pt2")
    transfer = save_npz(out / "transfer.npz", x_tr[: plan.transfer_samples])
    test = save_npz(out / "test.npz", x_te, y_te)

    with Service(out, threads=args.threads) as svc:
        t_id = svc.upload("teachers", pt2)
        d_id, e_id = svc.upload("datasets", transfer), svc.upload("datasets", test)
        t1 = time.perf_counter()
        job = svc.submit(
            {
                "teacher_ids": [t_id],
                "dataset_id": d_id,
                "eval_dataset_id": e_id,
                "student": {"architecture": "mobilenetv2", "size_ratio": 0.1},
                "distillation": {"temperature": plan.temperature},
                "training": {
                    "epochs": plan.student_epochs,
                    "batch_size": 128,
                    "learning_rate": plan.learning_rate,
                    "seed": args.seed,
                },
            }
        )
        report, onnx = svc.finish(job, out / "students")
        job_s = time.perf_counter() - t1
    student_pred = onnx_predict(onnx, x_te)
    measured = {
        "teacher_accuracy": float(np.mean(teacher_pred == y_te)),
        "student_accuracy": float(np.mean(student_pred == y_te)),
        "agreement": float(np.mean(student_pred == teacher_pred)),
    }
    text = report_text(
        plan, data.source, report, measured, teacher_s, job_s, started, load_before, args
    )
    print(text)
    write_output(name, text)
    numbers = {**measured, "report": {k: report[k] for k in REPORTED}}
    (out / "result.json").write_text(json.dumps(numbers, indent=1) + "\n")
    return 0


def report_text(
    plan: Plan,
    source: str,
    report: dict[str, Any],
    measured: dict[str, float],
    teacher_s: float,
    job_s: float,
    started: float,
    load_before: tuple[float, float, float],
    args: argparse.Namespace,
) -> str:
    student = report["student_architecture"]["config"]
    n_test = report["eval_samples"]
    rows = [
        [
            f"teacher: resnet, width {plan.teacher_width}, 3 stages × 2 basic blocks",
            f"{report['teacher']['parameters']:,}",
            "-",
            f"{100 * measured['teacher_accuracy']:.2f} %",
            "-",
            f"{100 * report['teacher_accuracy']:.2f} %",
            "-",
        ],
        [
            f"student: mobilenetv2, width {student['width']} (multiplier "
            f"{student['width'] / 32:.3g}), depth {student['depth']}",
            f"{report['student']['parameters']:,}",
            f"{report['compression_ratio']:.1f}×",
            f"{100 * measured['student_accuracy']:.2f} %",
            f"**{100 * measured['agreement']:.2f} %**",
            f"{100 * report['student_accuracy']:.2f} %",
            f"{100 * report['agreement_top1']:.2f} %",
        ],
    ]
    headers = [
        "model",
        "parameters",
        "compression",
        f"test accuracy ({n_test:,}, measured here)",
        "agreement with the teacher (measured here)",
        "test accuracy (service report)",
        "agreement (service report)",
    ]
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report["timings_s"].items())
    load_after = os.getloadavg()
    parts = [
        f"## Quality: a ResNet teacher into MobileNetV2, MNIST 1×28×28"
        f"{' (QUICK SMOKE RUN: not a result)' if args.quick else ''}",
        "",
        f"Data: {source}. Machine: {machine()}; --threads {args.threads or 'default'}.",
        f"Teacher: trained here on {plan.teacher_samples:,} training images (a fixed "
        f"subsample, seed 0) for {plan.teacher_epochs} epochs in {teacher_s:.0f} s. Student: "
        f"one job, transfer set the first {plan.transfer_samples:,} of those images without "
        f"labels, size_ratio 0.1, T = {plan.temperature:g}, {plan.student_epochs} epochs, "
        f"batch 128, lr {plan.learning_rate:g} (AdamW, warm-up + cosine); eval set the "
        f"{n_test:,} test images. The measured "
        "columns are the downloaded ONNX student (onnxruntime) and the teacher in PyTorch.",
        "",
        markdown_table(headers, rows),
        "",
        f"Job {job_s:.0f} s from submit to download ({timings}). Wall time "
        f"{(time.perf_counter() - started) / 60:.1f} min; load average "
        f"{' '.join(f'{v:.2f}' for v in load_before)} before, "
        f"{' '.join(f'{v:.2f}' for v in load_after)} after; seed {args.seed}.",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
