"""Distillation quality on small real sets, through the service's API.

    python -m bench.small_sets            # the real run (a few minutes on 2 CPU cores)
    python -m bench.small_sets --quick    # smoke run for make test
    python -m bench.small_sets --loss kd_jacobian --augmentation '{"noise": 0.05}'
    python -m bench.small_sets --sets mnist1d --students cnn1d --seeds 0,1 \
        --student-epochs 300 --augmentation '{"mixup": 1.0}'   # distilled vs hard, paired

scikit-learn's 8×8 digits (1,797 real images, shipped in the wheel) as 1×8×8 images, and
MNIST-1D (Greydanus 2020; generated locally by the mnist1d package: 4,000 + 1,000 signals of
length 40, as 1×40; published test accuracy: MLP 68 %, CNN 94 %). On each a CNN teacher is
trained here, exported to .pt2 and uploaded; an MLP student and a small CNN student (2-D on
digits, 1-D on MNIST-1D) are distilled by jobs with the default spec (T = 4, alpha = 0.1,
size_ratio 0.1) and, for comparison, trained on hard labels alone (alpha = 1). The test split
is the job's eval set: nothing is tuned on it. Accuracies are recounted on the downloaded ONNX.
"""

from __future__ import annotations

import argparse
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
from bench.service import (
    OUT,
    Service,
    machine,
    markdown_table,
    onnx_predict,
    save_npz,
    write_output,
)


@dataclass
class SmallSet:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    teacher: nn.Module
    students: tuple[str, ...]  # architectures
    epochs: int
    anchor: str
    unlabeled: np.ndarray | None = None  # extra label-free transfer samples (--unlabeled)


def digits(quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cut = round(0.6 * len(x))
    tr, te = order[:cut], order[cut:]
    if quick:
        tr, te = tr[:400], te[:200]
    return x[tr], y[tr], x[te], y[te]


def mnist1d(quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if quick:
        args.num_samples = 600
    data = make_dataset(args)  # generated here: no download
    x, xt = (np.asarray(data[k], dtype=np.float32)[:, None, :] for k in ("x", "x_test"))
    return x, np.asarray(data["y"], np.int64), xt, np.asarray(data["y_test"], np.int64)


# Each student is distilled (alpha 0.1) and, for comparison, trained on hard labels alone.
KINDS = (("distilled", 0.1), ("hard labels", 1.0))


def mnist1d_unlabeled(n: int) -> np.ndarray:
    """``n`` more signals from the same generator, with another seed (so none of them is a
    training or test signal), normalised as the generator normalises each set it makes;
    their labels are dropped."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    # The generator makes the same number of signals of each of its 10 classes.
    args.seed, args.num_samples, args.train_split = 1042, -(-n // 10) * 10, 1.0
    return np.asarray(make_dataset(args)["x"], dtype=np.float32)[:n, None, :]


def digits_teacher() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def mnist1d_teacher() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, 64, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 10, 10),
    )


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> nn.Module:
    """Adam, cosine schedule, batch 64, weight decay 1e-4."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, epochs * math.ceil(len(xt) / 64)
    )
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.inference_mode():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model: nn.Module, example: np.ndarray, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    sample = torch.from_numpy(example[:2])
    torch.export.save(torch.export.export(model, (sample,), dynamic_shapes=({0: batch},)), path)
    return path


def paired_difference(
    distilled: np.ndarray, hard: np.ndarray, y: np.ndarray
) -> tuple[float, float]:
    """Accuracy of ``distilled`` minus that of ``hard`` on the same test samples, and the
    standard error of that difference from the discordant pairs (the samples exactly one
    of the two gets right), in points."""
    n = len(y)
    b = int(((distilled == y) & (hard != y)).sum())
    c = int(((distilled != y) & (hard == y)).sum())
    diff = (b - c) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return 100 * diff, 100 * se


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (make test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument(
        "--sets", type=_list, default=["digits", "mnist1d"], help="digits,mnist1d (default both)"
    )
    parser.add_argument(
        "--students", type=_list, default=None, help="only these architectures (e.g. cnn1d)"
    )
    parser.add_argument("--student-epochs", type=int, default=None, help="default 60")
    parser.add_argument(
        "--unlabeled",
        type=int,
        default=0,
        help="MNIST-1D: the distilled jobs' transfer set is the training signals plus this "
        "many more from the generator, all without labels; the hard-label twins train on the "
        "labeled signals alone, for as many steps",
    )
    parser.add_argument(
        "--seeds",
        type=lambda text: [int(n) for n in _list(text)],
        default=[0],
        help="the students' training seeds (each a distilled and a hard-label job)",
    )
    objective.add_objective_args(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    name = ("small_sets_quick" if args.quick else "small_sets") + objective.name_suffix(args)
    if args.unlabeled and "mnist1d" not in args.sets:
        parser.error("--unlabeled draws MNIST-1D signals: it needs --sets with mnist1d")
    if args.sets != ["digits", "mnist1d"] or args.students:
        name += "_" + "_".join(args.sets + (args.students or []))
    if args.seeds != [0]:
        name += "_seeds" + "-".join(str(s) for s in args.seeds)
    if args.student_epochs:
        name += f"_{args.student_epochs}epochs"
    if args.unlabeled:
        name += f"_unlabeled{args.unlabeled}"
    student_epochs = args.student_epochs or (20 if args.quick else 60)
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    # --quick: enough epochs on a few hundred samples to learn (the smoke test asserts a floor).
    teacher_epochs = 20 if args.quick else 60

    sets = []
    # The teachers' initial weights (``train`` seeds only their training): the same teachers
    # every run, so runs with other student options compare students, not teachers.
    torch.manual_seed(0)
    for key, label, loader, teacher, students, anchor in (
        ("digits", "digits (sklearn, 1×8×8)", digits, digits_teacher(), ("mlp", "cnn"), "-"),
        (
            "mnist1d",
            "MNIST-1D (1×40)",
            mnist1d,
            mnist1d_teacher(),
            ("mlp", "cnn1d"),
            "MLP 68 %, CNN 94 %",
        ),
    ):
        if key not in args.sets:
            continue
        if args.students:
            students = tuple(a for a in students if a in args.students)
        x, y, xt, yt = loader(args.quick)
        t0 = time.perf_counter()
        train(teacher, x, y, teacher_epochs)
        print(
            f"{label}: teacher test accuracy {accuracy(teacher, xt, yt):.4f} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        extra = mnist1d_unlabeled(args.unlabeled) if key == "mnist1d" and args.unlabeled else None
        sets.append(SmallSet(label, x, y, xt, yt, teacher, students, student_epochs, anchor, extra))

    rows: list[list[Any]] = []
    with Service(out, threads=args.threads) as svc:
        jobs = []
        for i, s in enumerate(sets):
            t_id = svc.upload("teachers", export(s.teacher, s.x_train, out / f"teacher{i}.pt2"))
            d_id = svc.upload("datasets", save_npz(out / f"train{i}.npz", s.x_train, s.y_train))
            e_id = svc.upload("datasets", save_npz(out / f"test{i}.npz", s.x_test, s.y_test))
            epochs = {how: s.epochs for how, _ in KINDS}
            transfer = {how: d_id for how, _ in KINDS}
            if s.unlabeled is not None:
                both = np.concatenate([s.x_train, s.unlabeled])
                transfer["distilled"] = svc.upload(
                    "datasets", save_npz(out / f"transfer{i}_unlabeled.npz", both)
                )
                # As many optimizer steps as the distilled jobs, on the labeled signals alone.
                epochs["hard labels"] = round(s.epochs * len(both) / len(s.x_train))
            # --quick: one distilled student per set (each job has ~20 s of fixed cost here).
            kinds = KINDS[:1] if args.quick else KINDS
            for arch in s.students[:1] if args.quick else s.students:
                for seed in args.seeds:
                    for how, alpha in kinds:
                        spec = {
                            "teacher_ids": [t_id],
                            "dataset_id": transfer[how],
                            "eval_dataset_id": e_id,
                            "student": {"architecture": arch},
                            "distillation": objective.distillation(args, 4.0, alpha),
                            "training": {"epochs": epochs[how], "seed": seed},
                            **objective.augmentation(args, alpha),
                        }
                        jobs.append((s, arch, how, seed, svc.submit(spec)))
        predictions: dict[tuple[str, str, str, int], np.ndarray] = {}
        for s, arch, how, seed, job_id in jobs:
            report, onnx = svc.finish(job_id, out / "students")
            predicted = onnx_predict(onnx, s.x_test)
            predictions[(s.name, arch, how, seed)] = predicted
            recount = float((predicted == s.y_test).mean())
            rows.append(
                [
                    s.name,
                    f"{arch}, {how}" + (f", seed {seed}" if len(args.seeds) > 1 else ""),
                    f"{report['teacher']['parameters']:,}",
                    f"{report['student']['parameters']:,}",
                    f"{report['compression_ratio']:.1f}×",
                    f"{100 * report['teacher_accuracy']:.1f} %",
                    f"{100 * recount:.1f} %",
                    f"{100 * report['agreement_top1']:.1f} %",
                    s.anchor,
                ]
            )
            print(f"  {s.name} {arch} {how} seed {seed}: {100 * recount:.1f} %", flush=True)

    # Distilled minus hard-label accuracy, per student seed, on the same test samples.
    paired: list[list[Any]] = []
    for s in sets:
        for arch in s.students:
            for seed in args.seeds:
                pair = [predictions.get((s.name, arch, how, seed)) for how, _ in KINDS]
                if pair[0] is None or pair[1] is None:
                    continue
                diff, se = paired_difference(pair[0], pair[1], s.y_test)
                ratio = f"{diff / se:+.1f}" if se else "n/a"
                paired.append([s.name, arch, seed, f"{diff:+.1f}", f"{se:.1f}", ratio])

    headers = [
        "set",
        "student",
        "teacher params",
        "student params",
        "compression",
        "teacher acc",
        "student acc",
        "agreement",
        "published",
    ]
    text = "\n".join(
        [
            f"## Small sets{' (QUICK SMOKE RUN: not a result)' if args.quick else ''}",
            "",
            f"Machine: {machine()}. Teachers: {teacher_epochs} epochs here; students: "
            f"{student_epochs} epochs through the service, default spec (size_ratio 0.1, T 4), "
            + (
                f"the distilled jobs on the training signals plus {args.unlabeled:,} generated "
                "ones, all without labels, the hard-label twins for as many steps on the "
                "labeled ones, "
                if args.unlabeled
                else ""
            )
            + "alpha 0.1 (distilled) or 1.0 (hard labels only). Accuracy on the test split "
            f"({', '.join(f'{s.name}: {len(s.x_test)}' for s in sets)} samples), "
            "recounted on the downloaded ONNX student; agreement from the service's report. "
            + objective.describe(args),
            "",
            markdown_table(headers, rows),
            "",
            *(
                [
                    "Distilled minus hard-label accuracy on the same test samples (points); "
                    "the standard error from the samples exactly one of the two gets right:",
                    "",
                    markdown_table(
                        ["set", "student", "seed", "difference", "standard error", "in SEs"],
                        paired,
                    ),
                    "",
                ]
                if paired
                else []
            ),
            f"Wall time {(time.perf_counter() - started) / 60:.1f} min.",
        ]
    )
    print(text)
    write_output(name, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
