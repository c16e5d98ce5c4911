"""Deployable students: fp32, fp16 and int8 ONNX files, each measured outside the service.

    python -m bench.variants            # digits and MNIST (a few minutes on 2 CPU cores)
    python -m bench.variants --quick    # smoke run for make test (digits only, seconds)

A teacher is trained here on real data (scikit-learn's 8x8 digits: a small CNN; MNIST: a
784-1200-1200-10 MLP, Hinton et al. 2015's teacher, fewer epochs), uploaded as .pt2 with an
unlabelled transfer set and a labelled test set, and distilled by a job through the real
service (``stillhouse run``) with every format. Each ONNX file is then downloaded and run with
onnxruntime here, one thread, as a user would: its bytes, latency at batch 1, throughput at
batch 32 (medians of repeated runs), top-1 agreement with the teacher and accuracy on the test
set. The report's ``variants`` must give the same agreement and bytes (checked, exit 1 if
not). The goal (issue "deployable students"): int8 at most 0.3x the fp32 bytes, at least 1.5x
the fp32 throughput at batch 32, and at most 0.5 point of agreement lost.
"""

from __future__ import annotations

import argparse
import json
import statistics
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

from bench.service import OUT, Service, machine, markdown_table, save_npz, write_output
from bench.small_sets import digits, digits_teacher, export, train

FORMATS = ("onnx", "onnx_fp16", "onnx_int8")
GOAL = {"bytes": 0.3, "speed": 1.5, "agreement_points": 0.5}


@dataclass
class Case:
    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    teacher: nn.Module
    students: tuple[tuple[str, dict[str, Any]], ...]  # (label, student spec)
    epochs: int


def digits_case(quick: bool) -> Case:
    x, y, xt, yt = digits(quick)
    teacher = train(digits_teacher(), x, y, epochs=5 if quick else 30)
    students = (("mlp", {"architecture": "mlp"}), ("cnn", {"architecture": "cnn"}))
    return Case("digits", x, xt, yt, teacher, students, 5 if quick else 40)


def mnist_case(train_images: int, teacher_epochs: int) -> Case:
    from bench.data import load_mnist
    from bench.hinton_mnist import teacher_model

    data = load_mnist()
    x, y = data.x_train[:train_images], data.y_train[:train_images]
    teacher = train(teacher_model(1200), x, y, epochs=teacher_epochs)
    students = (
        ("mlp 784-800-800-10", {"architecture": "mlp", "hidden": [800, 800]}),
        ("mlp 784-300-10", {"architecture": "mlp", "hidden": [300]}),
    )
    return Case("MNIST", x, data.x_test, data.y_test, teacher, students, 10)


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_s(session: Any, x: np.ndarray, runs: int = 50) -> float:
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    for _ in range(5):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(path: Path, x: np.ndarray, teacher: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    pred = np.concatenate(
        [session.run(None, {name: x[i : i + 2048]})[0].argmax(1) for i in range(0, len(x), 2048)]
    )
    return {
        "bytes": path.stat().st_size,
        "latency_ms": 1e3 * median_s(session, x[:1]),
        "throughput": 32 / median_s(session, x[:32]),
        "agreement": float(np.mean(pred == teacher)),
        "accuracy": float(np.mean(pred == y)),
    }


def run_case(svc: Service, case: Case, folder: Path, seed: int) -> list[dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        teacher_pred = case.teacher(torch.from_numpy(case.x_test)).argmax(1).numpy()
    teacher_id = svc.upload("teachers", export(case.teacher, case.x_train, folder / "t.pt2"))
    transfer = svc.upload("datasets", save_npz(folder / "transfer.npz", case.x_train))
    held = svc.upload("datasets", save_npz(folder / "test.npz", case.x_test, case.y_test))
    rows = []
    for label, student in case.students:
        job = svc.client.submit(
            {
                "teacher_ids": [teacher_id],
                "dataset_id": transfer,
                "eval_dataset_id": held,
                "student": student,
                "training": {"epochs": case.epochs, "seed": seed},
                "export": {"formats": list(FORMATS)},
            }
        )
        done = svc.client.wait(job["id"], timeout=4 * 3600, poll=2.0)
        if done["status"] != "succeeded":
            raise RuntimeError(f"{case.name} {label}: {done['status']}: {done.get('error')}")
        assert done.report is not None
        report = done.report.model_dump(mode="json")
        reported = {v["format"]: v for v in report["variants"]}
        for fmt in FORMATS:
            path = svc.client.download_student(job["id"], fmt, folder / f"{job['id']}-{fmt}.onnx")
            outside = measure(path, case.x_test, teacher_pred, case.y_test)
            same = (
                abs(reported[fmt]["agreement_top1"] - outside["agreement"]) < 1e-9
                and reported[fmt]["size_bytes"] == outside["bytes"]
            )
            rows.append(
                {"set": case.name, "student": label, "format": fmt, "report_matches": same}
                | outside
                | {"margin_flag": reported[fmt]["within_margin"]}
            )
    return rows


def table(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """The markdown table, and whether every int8 row meets the goal."""
    fp32 = {(r["set"], r["student"]): r for r in rows if r["format"] == "onnx"}
    lines, met = [], True
    for r in rows:
        base = fp32[(r["set"], r["student"])]
        size_x = r["bytes"] / base["bytes"]
        speed_x = r["throughput"] / base["throughput"]
        lost = 100 * (base["agreement"] - r["agreement"])
        if r["format"] == "onnx_int8":
            met &= (
                size_x <= GOAL["bytes"]
                and speed_x >= GOAL["speed"]
                and lost <= GOAL["agreement_points"]
            )
        lines.append(
            [
                r["set"],
                r["student"],
                r["format"],
                f"{r['bytes']:,}",
                f"{size_x:.2f}x",
                f"{r['latency_ms']:.3f}",
                f"{r['throughput']:,.0f}",
                f"{speed_x:.2f}x",
                f"{100 * r['agreement']:.2f} %",
                "–" if r["format"] == "onnx" else f"{lost:+.2f}",
                f"{100 * r['accuracy']:.2f} %",
                "yes" if r["report_matches"] else "NO",
            ]
        )
    header = [
        "set",
        "student",
        "file",
        "bytes",
        "vs fp32",
        "latency b1 (ms)",
        "throughput b32 (/s)",
        "vs fp32",
        "agreement",
        "points lost",
        "accuracy",
        "report = outside",
    ]
    return markdown_table(header, lines), met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits only, tiny: a smoke run")
    parser.add_argument("--sets", default="digits,mnist", help="comma-separated: digits,mnist")
    parser.add_argument("--mnist-images", type=int, default=20000, help="MNIST transfer images")
    parser.add_argument("--mnist-teacher-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="STILLHOUSE_TORCH_THREADS")
    args = parser.parse_args(argv)
    sets = ["digits"] if args.quick else args.sets.split(",")
    name = "variants_quick" if args.quick else "variants"
    folder = OUT / name
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with Service(folder, threads=args.threads) as svc:
        for which in sets:
            case = (
                digits_case(args.quick)
                if which == "digits"
                else mnist_case(args.mnist_images, args.mnist_teacher_epochs)
            )
            print(f"{case.name}: distilling {len(case.students)} students", flush=True)
            rows += run_case(svc, case, folder / which, args.seed)
    text, met = table(rows)
    matches = all(r["report_matches"] for r in rows)
    verdict = "met on every int8 row" if met else "NOT met on every int8 row"
    summary = (
        f"{text}\n\n{machine()}; onnxruntime, 1 thread, medians of 50 runs; "
        f"{time.perf_counter() - started:.0f} s in all.\n"
        f"int8 goal (<= {GOAL['bytes']}x bytes, >= {GOAL['speed']}x throughput at batch 32, "
        f"<= {GOAL['agreement_points']} point of agreement lost): {verdict}"
    )
    print(summary)
    write_output(name, summary)
    (folder / "result.json").write_text(json.dumps(rows, indent=1))
    return 0 if matches else 1


if __name__ == "__main__":
    raise SystemExit(main())
