"""What a sweep costs against the least it could: one teacher pass plus its students' training.

    python -m bench.sweep_cost --threads 1            # the real run (a few minutes, 2 cores)
    python -m bench.sweep_cost --quick --threads 1    # smoke run

In one process, on the engine (``engine``, no service around it):

(a) the baseline: one soft-label pass of the teacher over the transfer set (the engine's own
    ``soft_label_stage``, fresh cache), then each candidate's student built
    (``student_stage``: sized, initialised, input statistics), given its targets
    (``make_targets`` at its temperature) and trained alone (``train_stage``); the split,
    the input checks and the teacher's eval logits are outside the clock. The sum is the
    least any sweep could cost;
(b) the sweep: ``distill`` with ``sweep`` set (fresh work folder and cache), wall time of the
    whole call: one soft-label pass, every candidate trained, exported, checked and measured,
    the teacher measured once.

It prints (b) / (a) per round and for the fastest rounds; the goal is at most 1.05. On a
shared machine the rounds differ by far more than 5 %, so it also prints, per round, the
sweep's wall time over its own soft-label pass plus its own students' training (the
report's ``timings_s``: the same run, under the same load), which is what the sweep adds.

The teacher is a randomly initialised 784-1200-1200-10 MLP and the data Gaussian clusters in
784 dimensions (the cost does not depend on what the numbers mean); students are the
engine's auto-sized MLPs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from bench import _harness as h
from core.spec import JobSpec
from engine.engine import distill
from engine.progress import Reporter
from engine.rows import ArrayRows
from engine.stages import (
    Context,
    soft_label_stage,
    split_stage,
    student_stage,
    teacher_eval_stage,
    train_stage,
)
from engine.sweep import candidate_specs
from engine.targets import make_targets


class RandomTeacher:
    format = "torch_export"
    num_classes = 10
    input_shape: list[int | None] = [None, 784]

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.module: nn.Module | None = nn.Sequential(
            nn.Linear(784, 1200), nn.ReLU(), nn.Linear(1200, 1200), nn.ReLU(), nn.Linear(1200, 10)
        ).eval()
        self.parameters = sum(p.numel() for p in self.module.parameters())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert self.module is not None
        with torch.inference_mode():
            return self.module(x)


def clusters(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(10, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return centers[y] + 0.8 * torch.randn(n, 784, generator=g), y


def job(args: argparse.Namespace) -> JobSpec:
    return JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "training": {"epochs": args.epochs, "batch_size": 128, "seed": 0},
            "export_formats": args.formats.split(","),
            "sweep": {"temperature": [2.0, 6.0], "size_ratio": [0.05, 0.15]},
        }
    )


def context(spec: JobSpec, workdir: Path, teacher: RandomTeacher) -> Context:
    return Context(
        [teacher],
        spec,
        torch.device("cpu"),
        workdir,
        workdir / "cache",
        {"teachers": ["random"], "dataset": "clusters"},
        Reporter(lambda ev: None, spec.training.epochs),
        lambda: False,
        0,
        inference_batch=2048,
    )


@dataclass(frozen=True)
class Took:
    wall: float
    cpu: float  # this process's CPU time: what a busy machine's other work does not inflate

    def __add__(self, other: Took) -> Took:
        return Took(self.wall + other.wall, self.cpu + other.cpu)


def clock() -> Callable[[], Took]:
    wall, cpu = time.perf_counter(), time.process_time()
    return lambda: Took(time.perf_counter() - wall, time.process_time() - cpu)


def baseline(spec: JobSpec, x: torch.Tensor, tmp: Path) -> tuple[Took, list[Took]]:
    """(teacher pass seconds, each candidate's training seconds), the engine's own stages."""
    teacher = RandomTeacher()
    ctx = context(spec, tmp / "baseline", teacher)
    transfer = ArrayRows.of_tensors(x, None)
    splits = split_stage(transfer, None, spec.training)
    took = clock()
    soft = soft_label_stage(ctx, transfer)
    teacher_pass = took()
    reference = teacher_eval_stage(ctx, splits.eval)
    trains = []
    for i, one in enumerate(candidate_specs(spec)):
        own = replace(ctx, spec=one, workdir=tmp / "baseline" / str(i))
        took = clock()
        student = student_stage(own, splits.train)
        targets = make_targets(
            soft,
            teachers=[teacher],
            index=splits.train_index,
            temperature=one.distillation.temperature,
            device=ctx.device,
        )
        train_stage(own, student, splits, targets, reference)
        trains.append(took())
    return teacher_pass, trains


def sweep(spec: JobSpec, x: torch.Tensor, tmp: Path) -> tuple[Took, dict[str, Any]]:
    took = clock()
    result = distill(
        [RandomTeacher()],
        x,
        None,
        None,
        None,
        spec,
        workdir=tmp / "sweep",
        cache_dir=tmp / "sweep-cache",
        identity={"teachers": ["random"], "dataset": "clusters"},
        device=torch.device("cpu"),
        checkpoint_every=0,
    )
    return took(), result.report


def one_round(spec: JobSpec, x: torch.Tensor, tmp: Path, sweep_first: bool) -> dict[str, Any]:
    """(a) and (b) once, in the given order, each in fresh folders."""
    got: dict[str, Any] = {}
    for part in ("b", "a") if sweep_first else ("a", "b"):
        if part == "a":
            got["teacher_pass"], got["trains"] = baseline(spec, x, tmp / "a")
        else:
            got["wall"], got["report"] = sweep(spec, x, tmp / "b")
    got["least"] = sum(got["trains"], got["teacher_pass"])
    return got


def row(r: int, got: dict[str, Any]) -> str:
    """One round's line: wall times, CPU times, and the sweep against its own parts."""
    a, b = got["least"], got["wall"]
    timings = got["report"].timings_s
    own = timings["soft_labeling"] + timings["training"]
    trains = " + ".join(f"{t.wall:.1f}" for t in got["trains"])
    return (
        f"| {r + 1}{' (b first)' if r % 2 else ''} | {got['teacher_pass'].wall:.2f} | "
        f"{trains} | {a.wall:.2f} / {a.cpu:.2f} | {b.wall:.2f} / {b.cpu:.2f} | "
        f"{b.wall / a.wall:.3f} | {b.cpu / a.cpu:.3f} | {b.wall / own:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch (smoke run)")
    parser.add_argument("--samples", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="of (a) and (b), interleaved, order alternating"
    )
    parser.add_argument(
        "--formats", default="safetensors", help="export_formats of the sweep, comma-separated"
    )
    parser.add_argument("--out", type=Path, default=h.OUT / "sweep_cost")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.epochs, args.rounds = 1_000, 1, 1
    torch.set_num_threads(args.threads)
    out = h.Transcript()
    spec = job(args)
    x, _ = clusters(args.samples)
    out(
        f"# sweep cost: {len(candidate_specs(spec))} candidates, {args.samples} samples × 784, "
        f"{args.epochs} epochs, formats {args.formats}, {args.rounds} rounds"
    )
    out(f"machine: {h.machine()}; load average before: {h.load_average()}")
    out()
    out(
        "| round | (a) teacher pass s | (a) students alone s | (a) total s wall / CPU "
        "| (b) sweep s wall / CPU | (b) / (a) wall | (b) / (a) CPU | (b) wall / its own |"
    )
    out("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed: the first training, export and timing in a process pay for lazy set-up
        # (kernels, the exporter's imports) that neither side should carry.
        sweep(spec, x[:500], Path(tmp) / "warm-up")
        for r in range(args.rounds):
            got = one_round(spec, x, Path(tmp) / str(r), sweep_first=r % 2 == 1)
            rounds.append(got)
            out(row(r, got))
    out()
    for what in ("wall", "cpu"):
        best_a = min(getattr(g["least"], what) for g in rounds)
        best_b = min(getattr(g["wall"], what) for g in rounds)
        out(
            f"fastest rounds, {what}: (b) / (a) = {best_b:.2f} / {best_a:.2f} = "
            f"{best_b / best_a:.3f} (goal ≤ 1.05)"
        )
    out(f"load average after: {h.load_average()}")
    args.out.mkdir(parents=True, exist_ok=True)
    out.save(args.out / "sweep_cost.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
