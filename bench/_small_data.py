"""``python -m bench.hinton_mnist --small-data 500,1000``: few transfer images, kd against
kd_jacobian. No ``main``: a mode of bench/hinton_mnist.py.

The teacher (trained on the whole training split) is the same as in the paper's table; each
student sees only the first N images of the training split, with their labels, and is
trained three ways through the service: hard labels alone (alpha 1), kd (alpha 0.1, T), and
kd_jacobian (the same, plus matching the teacher's input gradients). Derivative matching
should matter most when samples are few (Czarnecki et al. 2017): each image then also
teaches how the teacher's answer changes around it. Errors are counted on the 10,000 test
images with the downloaded ONNX students; gap recovered is against the hard-label student
of the same N.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import _objectives as objective
from bench.service import Service, machine, markdown_table, onnx_predict, save_npz

DEFAULT_EPOCHS = 60  # 500 images are 4 steps an epoch: 240 steps (1,000: 480)


def _runs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec sections) of the three students trained on each transfer set."""
    temp, aug = args.temperature, objective.augmentation(args, 0.1)
    jacobian = {"loss": "kd_jacobian", "jacobian_weight": args.jacobian_weight}
    return [
        ("hard labels", {"distillation": {"temperature": 1.0, "alpha": 1.0}}),
        ("kd", {"distillation": {"temperature": temp, "alpha": 0.1}, **aug}),
        ("kd_jacobian", {"distillation": {"temperature": temp, "alpha": 0.1, **jacobian}, **aug}),
    ]


def run_small_data(
    args: argparse.Namespace,
    plan: Any,
    splits: tuple[np.ndarray, ...],
    teacher_test: int,
    pt2: Path,
    out: Path,
    source: str,
) -> str:
    x_tr, y_tr, x_val, y_val, x_te, y_te = splits
    if objective.needs_images(args):
        x_tr, x_val, x_te = (a.reshape(-1, 1, 28, 28) for a in (x_tr, x_val, x_te))
    epochs = args.student_epochs or DEFAULT_EPOCHS
    rows: list[dict[str, Any]] = []
    with Service(out, threads=args.threads) as svc:
        t_id = svc.upload("teachers", pt2)
        val_id = svc.upload("datasets", save_npz(out / "validation.npz", x_val, y_val))
        for n in args.small_data:
            path = save_npz(out / f"transfer_{n}.npz", x_tr[:n], y_tr[:n])
            d_id = svc.upload("datasets", path)
            for run, sections in _runs(args):
                spec = {
                    "teacher_ids": [t_id],
                    "dataset_id": d_id,
                    "eval_dataset_id": val_id,
                    "student": {"architecture": "mlp", "hidden": plan.big},
                    "training": {"epochs": epochs, "batch_size": 128, "seed": args.seed},
                    **sections,
                }
                rows.append({"n": n, "run": run, "job": svc.submit(spec)})
        for row in rows:
            report, onnx = svc.finish(row["job"], out / "students")
            row["test_errors"] = int((onnx_predict(onnx, x_te) != y_te).sum())
            row["val_errors"] = round((1 - report["student_accuracy"]) * report["eval_samples"])
            row["train_s"] = report["timings_s"]["training"]
            print(f"  N={row['n']} {row['run']}: {row['test_errors']} test errors", flush=True)
    return _table(args, plan, rows, teacher_test, source, epochs)


def _table(
    args: argparse.Namespace,
    plan: Any,
    rows: list[dict[str, Any]],
    teacher_test: int,
    source: str,
    epochs: int,
) -> str:
    hard = {r["n"]: r["test_errors"] for r in rows if r["run"] == "hard labels"}
    body = []
    for r in rows:
        gap = hard[r["n"]] - teacher_test
        recovered = (
            "-"
            if r["run"] == "hard labels" or gap == 0
            else f"{100 * (hard[r['n']] - r['test_errors']) / gap:.0f} %"
        )
        cells = [r["run"], r["val_errors"], r["test_errors"], recovered, f"{r['train_s']:.0f}"]
        body.append([f"{r['n']:,}", *cells])
    student = "784-" + "-".join(str(h) for h in plan.big) + "-10"
    aug = json.dumps(args.augmentation) if args.augmentation else "none"
    return "\n".join(
        [
            "## MNIST with few transfer images: kd against kd_jacobian",
            "",
            f"Data: {source}. Machine: {machine()}. Seed {args.seed}. Teacher "
            f"784-{plan.teacher_hidden}-{plan.teacher_hidden}-10: {teacher_test} test errors. "
            f"Students {student}: {epochs} epochs on the first N training images (labels "
            f"kept), T {args.temperature:g}, alpha 0.1, jacobian_weight "
            f"{args.jacobian_weight:g}, augmentation of the distilled jobs: {aug}. Test errors "
            "on the 10,000 test images (downloaded ONNX); gap recovered against the "
            "hard-label student of the same N.",
            "",
            markdown_table(
                ["N", "student", "val errors", "test errors", "gap recovered", "training s"],
                body,
            ),
        ]
    )
