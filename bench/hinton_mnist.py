"""Hinton, Vinyals & Dean 2015, section 3 (MNIST), rebuilt through the service's API.

    python -m bench.hinton_mnist            # the real run (about 30 min on 2 CPU cores)
    python -m bench.hinton_mnist --quick    # smoke run for make test (tiny, < 1 min)
    python -m bench.hinton_mnist --loss kd_jacobian --augmentation '{"shift": 2}'
    python -m bench.hinton_mnist --small-data 500,1000   # kd vs kd_jacobian on few images

Their table: a 784-1200-1200-10 teacher (dropout, ±2 px jitter) made 67 test errors; a
784-800-800-10 student on hard labels 146; the same student distilled at T = 20, 74, so
distillation recovered (146 − 74) / (146 − 67) = 91 % of the gap. Here the teacher is trained
by this script on 50,000 training images (10,000 held out for validation), exported to .pt2
and uploaded; every student is a job through the SDK against a `stillhouse run` subprocess,
downloaded as ONNX and counted on the 10,000 test images with onnxruntime. T is chosen on the
validation split (the service's report on the eval set), never on the test set.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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

from bench import _objectives as objective
from bench._small_data import run_small_data
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

HINTON = {"teacher": 67, "hard": 146, "distilled": 74}


@dataclass(frozen=True)
class Plan:
    teacher_hidden: int
    teacher_epochs: int
    big: list[int]
    small: list[int]
    big_epochs: int
    small_epochs: int
    big_grid: list[float]
    small_grid: list[float]
    alpha: float
    alpha_alt: float | None  # also tried at the chosen T; the validation split picks
    n_train: int | None  # None: all 50,000
    n_val: int
    n_test: int | None


FULL = Plan(
    1200, 20, [800, 800], [30, 30], 20, 30, [2, 4, 8, 20], [1, 2, 4, 8], 0.1, 0.5, None, 10000, None
)
# --quick skips the small student (no grid): each job has ~20 s of fixed cost on this CPU.
# 600 training images are 5 steps an epoch: 20 teacher and 10 student epochs cost seconds and
# learn enough for the smoke test's floor (well above chance).
QUICK = Plan(64, 20, [32, 32], [], 10, 1, [4], [], 0.1, None, 600, 200, 1000)


def jitter(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each 28×28 image by up to ``pixels`` in x and y (zeros shifted in)."""
    n = len(x)
    padded = nn.functional.pad(x.view(n, 28, 28), (pixels,) * 4)
    dy, dx = (torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)).unbind(0)
    rows = (dy[:, None] + torch.arange(28))[:, :, None]
    cols = (dx[:, None] + torch.arange(28))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(n, 784)


def teacher_model(hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Dropout(0.2),
        nn.Linear(784, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(hidden, 10),
    )


def train_teacher(x: np.ndarray, y: np.ndarray, plan: Plan, seed: int) -> nn.Module:
    """Adam with a cosine schedule, batch 128, dropout 0.2 (input) / 0.5 (hidden), ±2 px."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = teacher_model(plan.teacher_hidden)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = plan.teacher_epochs * math.ceil(len(xt) / 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for epoch in range(plan.teacher_epochs):
        if epoch and epoch % 5 == 0:
            print(f"  teacher epoch {epoch}/{plan.teacher_epochs}", flush=True)
        for idx in torch.randperm(len(xt), generator=generator).split(128):
            loss = nn.functional.cross_entropy(model(jitter(xt[idx], 2, generator)), yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def export_teacher(model: nn.Module, path: Path, images: bool = False) -> Path:
    """As a .pt2 taking [N, 784], or [N, 1, 28, 28] images (for shifts and flips)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    example = torch.zeros(2, 1, 28, 28) if images else torch.zeros(2, 784)
    if images:
        model = nn.Sequential(nn.Flatten(), model)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def errors_of(model: nn.Module, x: np.ndarray, y: np.ndarray) -> int:
    with torch.inference_mode():
        pred = torch.cat([model(b).argmax(1) for b in torch.from_numpy(x).split(4096)])
    return int((pred.numpy() != y).sum())


def gap(hard: int, distilled: int, teacher: int) -> str:
    """Share of the hard-label twin's lead of errors over the teacher that distillation
    recovered. Only where there is a gap: a twin at or below the teacher's errors leaves
    nothing to recover, and a ratio of two negative differences would read as progress."""
    if hard <= teacher:
        return f"no gap (twin {hard - teacher:+d} vs teacher)"
    return f"{100 * (hard - distilled) / (hard - teacher):.0f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (make test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--student-epochs", type=int, default=None, help="for the 800-800 jobs")
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="a .pt2 this script trained before (skip training)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the teacher's training and every student job (the splits stay fixed)",
    )
    parser.add_argument("--teacher-epochs", type=int, default=None, help="override the plan's")
    parser.add_argument(
        "--small-data",
        type=lambda text: [int(n) for n in text.split(",")],
        default=None,
        help="instead of the paper's table: transfer sets of these sizes (e.g. 500,1000), "
        "hard labels vs kd vs kd_jacobian for the 800-800 student",
    )
    parser.add_argument("--temperature", type=float, default=4.0, help="--small-data's T")
    parser.add_argument(
        "--small-only", action="store_true", help="only the 784-30-30-10 students (no 800-800)"
    )
    parser.add_argument("--small-epochs", type=int, default=None, help="for the 30-30 jobs")
    parser.add_argument(
        "--no-unlabeled", action="store_true", help="skip the label-free 800-800 job"
    )
    objective.add_objective_args(parser)
    args = parser.parse_args(argv)
    if args.small_only and (args.quick or args.small_data):
        parser.error("--small-only runs the paper's 30-30 grid: not with --quick or --small-data")
    plan = QUICK if args.quick else FULL
    if args.student_epochs:
        plan = dataclasses.replace(plan, big_epochs=args.student_epochs)
    if args.teacher_epochs:
        plan = dataclasses.replace(plan, teacher_epochs=args.teacher_epochs)
    if args.small_epochs:
        plan = dataclasses.replace(plan, small_epochs=args.small_epochs)
    if args.small_only:
        plan = dataclasses.replace(plan, big=[])
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    name = ("hinton_mnist_quick" if args.quick else "hinton_mnist") + (
        f"_seed{args.seed}" if args.seed else ""
    )
    if args.small_data:
        name += "_small_data" + ("_augmented" if args.augmentation else "")
    else:
        name += objective.name_suffix(args)
    if args.small_only:
        name += f"_small_only_{plan.small_epochs}epochs"
    elif args.small_epochs:
        name += f"_small_{plan.small_epochs}epochs"
    if args.no_unlabeled:
        name += "_no_unlabeled"
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)

    data = load_mnist()
    order = np.random.default_rng(0).permutation(len(data.x_train))
    val_idx, train_idx = order[: plan.n_val], order[plan.n_val :][: plan.n_train]
    x_tr, y_tr = data.x_train[train_idx], data.y_train[train_idx]
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    x_te, y_te = data.x_test[: plan.n_test], data.y_test[: plan.n_test]
    print(f"data: {data.source}; train {len(x_tr)}, validation {len(x_val)}, test {len(x_te)}")

    t0 = time.perf_counter()
    if args.teacher is not None:
        teacher = torch.export.load(args.teacher).module()  # our own file: trusted
    else:
        teacher = train_teacher(x_tr, y_tr, plan, args.seed)
    teacher_s = time.perf_counter() - t0
    teacher_test = errors_of(teacher, x_te, y_te)
    teacher_val = errors_of(teacher, x_val, y_val)
    print(
        f"teacher 784-{plan.teacher_hidden}-{plan.teacher_hidden}-10: {teacher_test} test errors, "
        f"{teacher_val} validation errors ({teacher_s:.0f} s, {plan.teacher_epochs} epochs)"
    )
    images = objective.needs_images(args)
    # A flat teacher from an earlier run is exported again, taking images, when shifts need them.
    reuse = args.teacher is not None and not images
    pt2 = args.teacher if reuse else export_teacher(teacher, out / "teacher.pt2", images)
    if args.small_data:
        splits = (x_tr, y_tr, x_val, y_val, x_te, y_te)
        text = run_small_data(args, plan, splits, teacher_test, pt2, out, data.source)
        print(text)
        write_output(name, text)
        return 0
    if images:  # the teacher takes images: so do the sets (and the downloaded students)
        x_tr, x_val, x_te = (a.reshape(-1, 1, 28, 28) for a in (x_tr, x_val, x_te))
    labeled = save_npz(out / "transfer_labeled.npz", x_tr, y_tr)
    unlabeled = save_npz(out / "transfer_unlabeled.npz", x_tr)
    val = save_npz(out / "validation.npz", x_val, y_val)

    rows: dict[str, dict[str, Any]] = {}
    with Service(out, threads=args.threads) as svc:
        t_id = svc.upload("teachers", pt2)
        ids = {p.name: svc.upload("datasets", p) for p in (labeled, unlabeled, val)}

        def spec(hidden: list[int], epochs: int, temp: float, alpha: float, data: str) -> dict:
            return {
                "teacher_ids": [t_id],
                "dataset_id": ids[data],
                "eval_dataset_id": ids[val.name],
                "student": {"architecture": "mlp", "hidden": hidden},
                "distillation": objective.distillation(args, temp, alpha),
                "training": {
                    "epochs": epochs,
                    "batch_size": 128,
                    "learning_rate": 1e-3,
                    "seed": args.seed,
                },
                **objective.augmentation(args, alpha),
            }

        def submit(key: str, **kw: Any) -> None:
            rows[key] = {**kw, "job": svc.submit(spec(**kw))}

        groups = [
            (size, hidden, epochs, grid)
            for size, hidden, epochs, grid in (
                ("big", plan.big, plan.big_epochs, plan.big_grid),
                ("small", plan.small, plan.small_epochs, plan.small_grid),
            )
            if hidden
        ]
        for size, hidden, epochs, grid in groups:
            # alpha = 1: the loss is pure cross-entropy on the labels (soft term weight 0).
            submit(
                f"{size}/hard", hidden=hidden, epochs=epochs, temp=1.0, alpha=1.0, data=labeled.name
            )
            for temp in grid:
                submit(
                    f"{size}/T={temp:g}",
                    hidden=hidden,
                    epochs=epochs,
                    temp=temp,
                    alpha=plan.alpha,
                    data=labeled.name,
                )

        def collect(key: str) -> None:
            t = time.perf_counter()
            report, onnx = svc.finish(rows[key]["job"], out / "students")
            rows[key].update(
                val_errors=round((1 - report["student_accuracy"]) * report["eval_samples"]),
                test_errors=int((onnx_predict(onnx, x_te) != y_te).sum()),
                params=report["student"]["parameters"],
                train_s=report["timings_s"]["training"],
            )
            print(
                f"  {key}: {rows[key]['val_errors']} val / {rows[key]['test_errors']} test "
                f"errors (waited {time.perf_counter() - t:.0f} s)",
                flush=True,
            )

        best: dict[str, str] = {}
        alt: dict[str, str] = {}
        for size, hidden, epochs, grid in groups:
            collect(f"{size}/hard")
            for temp in grid:
                collect(f"{size}/T={temp:g}")
            keys = [f"{size}/T={temp:g}" for temp in grid]
            best[size] = min(keys, key=lambda k: rows[k]["val_errors"])  # first on ties
            temp = rows[best[size]]["temp"]
            if plan.alpha_alt is not None:  # alpha, at the T the validation split chose
                alt[size] = f"{size}/T={temp:g},alpha={plan.alpha_alt:g}"
                submit(
                    alt[size],
                    hidden=hidden,
                    epochs=epochs,
                    temp=temp,
                    alpha=plan.alpha_alt,
                    data=labeled.name,
                )
            # Queued now, it runs while the small students are collected.
            if size == "big" and not args.no_unlabeled:
                submit(
                    "big/unlabeled",
                    hidden=plan.big,
                    epochs=plan.big_epochs,
                    temp=temp,
                    alpha=plan.alpha,
                    data=unlabeled.name,
                )
        for size, key in alt.items():
            collect(key)
            if rows[key]["val_errors"] < rows[best[size]]["val_errors"]:
                best[size] = key
        if "big/unlabeled" in rows:
            collect("big/unlabeled")

    text = report_text(
        plan,
        data.source,
        rows,
        best,
        teacher_test,
        teacher_val,
        f"trained here in {teacher_s:.0f} s"
        if args.teacher is None
        else f"trained by an earlier run of this script ({args.teacher.name})",
        time.perf_counter() - started,
        args.quick,
        args.seed,
        objective.describe(args),
    )
    print(text)
    write_output(name, text)
    return 0


def report_text(
    plan: Plan,
    source: str,
    rows: dict[str, dict[str, Any]],
    best: dict[str, str],
    teacher_test: int,
    teacher_val: int,
    teacher_note: str,
    wall_s: float,
    quick: bool,
    seed: int = 0,
    objective_note: str = "",
) -> str:
    def arch(hidden: list[int]) -> str:
        return "784-" + "-".join(str(h) for h in hidden) + "-10"

    t_arch = arch([plan.teacher_hidden] * 2)
    big_hard = rows["big/hard"]["test_errors"] if plan.big else 0
    main_rows: list[list[Any]] = [
        [
            f"teacher {t_arch} (dropout, ±2 px jitter)",
            "-",
            "-",
            teacher_val,
            teacher_test,
            "-",
            HINTON["teacher"],
        ],
    ]

    def line(label: str, key: str, hard: int, hinton: Any) -> list[Any]:
        r = rows[key]
        recovered = "-" if key.endswith("/hard") else gap(hard, r["test_errors"], teacher_test)
        temp = "-" if key.endswith("/hard") else f"{r['temp']:g}"
        return [
            label,
            temp,
            r["alpha"] if not key.endswith("unlabeled") else "(no labels)",
            r["val_errors"],
            r["test_errors"],
            recovered,
            hinton,
        ]

    if plan.big:
        main_rows += [
            line(
                f"student {arch(plan.big)}, hard labels only", "big/hard", big_hard, HINTON["hard"]
            ),
            line(
                f"student {arch(plan.big)}, distilled", best["big"], big_hard, HINTON["distilled"]
            ),
        ]
    if "big/unlabeled" in rows:
        main_rows.append(
            line(
                f"student {arch(plan.big)}, distilled, transfer set without labels",
                "big/unlabeled",
                big_hard,
                "-",
            )
        )
    if plan.small:
        small_hard = rows["small/hard"]["test_errors"]
        main_rows += [
            line(f"student {arch(plan.small)}, hard labels only", "small/hard", small_hard, "-"),
            line(f"student {arch(plan.small)}, distilled", best["small"], small_hard, "-"),
        ]
    headers = [
        "model",
        "T",
        "alpha",
        f"val errors ({plan.n_val:,})",
        "test errors",
        "gap recovered",
        "Hinton et al.",
    ]
    grid_rows = [
        [
            key.split("/")[0].replace("big", arch(plan.big)).replace("small", arch(plan.small)),
            key.split("/")[1],
            r["params"],
            r["val_errors"],
            r["test_errors"],
            "chosen" if key in best.values() else "",
            f"{r['train_s']:.0f}",
        ]
        for key, r in rows.items()
    ]
    parts = [
        f"## Hinton et al. 2015, MNIST{' (QUICK SMOKE RUN: not a result)' if quick else ''}",
        "",
        f"Data: {source}. Machine: {machine()}.",
        f"Seed {seed} (teacher and students; the splits are fixed). "
        f"Teacher: {plan.teacher_epochs} epochs, {teacher_note}. Students: "
        + ", ".join(
            f"{epochs} epochs ({arch(hidden)})"
            for hidden, epochs in ((plan.big, plan.big_epochs), (plan.small, plan.small_epochs))
            if hidden
        )
        + ", Adam(W) lr 1e-3, cosine, batch 128, through the service. "
        f"T (grid, at alpha {plan.alpha:g})"
        + (f", then alpha ({plan.alpha_alt:g} at that T)" if plan.alpha_alt is not None else "")
        + " chosen on the validation errors; test errors counted on the downloaded ONNX "
        "students. Gap recovered = (hard − distilled) / (hard − teacher). " + objective_note,
        "",
        markdown_table(headers, main_rows),
        "",
        "Every job (test errors shown for completeness; only validation errors chose):",
        "",
        markdown_table(
            ["student", "run", "parameters", "val errors", "test errors", "", "training s"],
            grid_rows,
        ),
        "",
        f"Wall time {wall_s / 60:.1f} min.",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
