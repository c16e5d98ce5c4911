"""The report's speedup under load: is it a number a user can take as a promise?

    python -m bench.report_speed              # about a minute on 2 CPU cores
    python -m bench.report_speed --quick      # smoke run for make test

A digits MLP teacher (64-1024-1024-10, about 1.1 M weights, the demo's size) and a student
of a tenth of that are timed the way a job's report times them, on this machine's cores
with the job's torch thread count, in three conditions, ``--repeats`` times each:

- idle;
- one core kept busy by a plain loop in another process (the audit's reproduction);
- a load that comes and goes (the loop runs for 0.2 s out of every 0.5 s).

Two methods, side by side in the same process: "sequential" (the old report: the teacher's
full measurement, then the student's, wall time, the job's threads) and the report's own
(``report.measure_pair`` as ``stages.evaluate_stage`` calls it for torch models on a CPU:
short rounds taking turns, torch on one thread timed by its CPU time; the speedup is the
median of the rounds' ratios). Printed: the median speedup of each method in each
condition, its ratio to the idle figure (goal: within 1.3x with one core busy), and how
often the report's measurement called itself disturbed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from bench.service import machine, markdown_table, write_output
from engine.report import measure_pair, measure_speed, one_torch_thread

GOAL = 1.3
CPU = torch.device("cpu")


def _spin(stop: Any, duty: float) -> None:
    """Busy one core: always (duty 1.0) or ``duty`` of every half second."""
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < 0.5 * duty:
            pass
        if duty < 1.0:
            time.sleep(0.5 * (1.0 - duty))


def sequential(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> float:
    t = measure_speed(teacher, x, CPU)
    s = measure_speed(student, x, CPU)
    return s["throughput_per_s"] / t["throughput_per_s"]


def interleaved(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> tuple[float, bool]:
    with one_torch_thread():
        _, _, speedup = measure_pair(teacher, x, student, x, CPU, clock="thread_cpu")
    return speedup["median"], bool(speedup["disturbed"])


def run(
    condition: str, repeats: int, models: tuple[nn.Module, nn.Module], x: torch.Tensor
) -> dict[str, Any]:
    duty = {"idle": 0.0, "one core busy": 1.0, "load comes and goes": 0.4}[condition]
    stop = multiprocessing.Event()
    spinner = None
    if duty:
        spinner = multiprocessing.Process(target=_spin, args=(stop, duty), daemon=True)
        spinner.start()
        time.sleep(0.3)
    try:
        seq, inter, disturbed = [], [], 0
        for _ in range(repeats):
            seq.append(sequential(*models, x))
            value, flagged = interleaved(*models, x)
            inter.append(value)
            disturbed += flagged
    finally:
        stop.set()
        if spinner is not None:
            spinner.join(timeout=5)
    return {
        "condition": condition,
        "sequential": statistics.median(seq),
        "sequential_range": (min(seq), max(seq)),
        "interleaved": statistics.median(inter),
        "interleaved_range": (min(inter), max(inter)),
        "disturbed": disturbed,
        "repeats": repeats,
    }


def _ranged(value: float, span: tuple[float, float]) -> str:
    return f"{value:.2f} ({span[0]:.2f}-{span[1]:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats: a smoke run")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    torch.manual_seed(0)
    teacher = nn.Sequential(
        nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    ).eval()
    student = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 10)).eval()
    x = torch.rand(64, 64)
    rows = [
        run(c, repeats, (teacher, student), x)
        for c in ("idle", "one core busy", "load comes and goes")
    ]
    idle = rows[0]
    lines = []
    for r in rows:
        lines.append(
            [
                r["condition"],
                _ranged(r["sequential"], r["sequential_range"]),
                f"{r['sequential'] / idle['sequential']:.2f}x",
                _ranged(r["interleaved"], r["interleaved_range"]),
                f"{r['interleaved'] / idle['interleaved']:.2f}x",
                f"{r['disturbed']} of {r['repeats']}",
            ]
        )
    table = markdown_table(
        [
            "condition",
            "old: sequential, wall (range)",
            "vs idle",
            "report: interleaved, 1 thread CPU time (range)",
            "vs idle",
            "flagged disturbed",
        ],
        lines,
    )
    worst = max(abs(r["interleaved"] / idle["interleaved"]) for r in rows[1:])
    worst = max(worst, max(idle["interleaved"] / r["interleaved"] for r in rows[1:]))
    text = (
        f"{table}\n\n{machine()}; torch threads {torch.get_num_threads()}; "
        f"{repeats} measurements a condition.\n"
        f"goal (interleaved within {GOAL}x of idle under load): "
        f"{'met' if worst <= GOAL else 'NOT met'} (worst {worst:.2f}x)"
    )
    print(text)
    write_output("report_speed_quick" if args.quick else "report_speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
