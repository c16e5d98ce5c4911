"""End-to-end check of the engine on a GPU: soft labels, 1 epoch, export, report.

    python bench/gpu_check.py                      # on CUDA, the full-size teacher
    python bench/gpu_check.py --device cpu --quick # what `make test` runs, so it cannot rot

Trains a digits MLP teacher here (64-1200-1200-10, 1.53 M parameters; --quick: 64-256-256-10),
saves it as .pt2 and ONNX, then distils through ``run_distillation`` exactly as a worker
would: the .pt2 teacher with cached soft labels, then (unless --quick) an ensemble of the
.pt2 and the ONNX teacher in online mode. Prints one table per run; exits non-zero when a
run fails or its numbers are not sane.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from core.contracts import FileRef, Report  # noqa: E402
from core.spec import JobSpec  # noqa: E402
from engine.engine import run_distillation  # noqa: E402
from engine.export import _quiet_exporter  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def train_teacher(x: torch.Tensor, y: torch.Tensor, hidden: int, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def save_teacher(model: nn.Module, example: torch.Tensor, folder: Path) -> tuple[Path, Path]:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    pt2, onnx_path = folder / "teacher.pt2", folder / "teacher.onnx"
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), pt2)
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamic_shapes=({0: batch},),
            dynamo=True,
            verbose=False,
            external_data=False,
        )
    return pt2, onnx_path


def table(title: str, report: Report, wall_s: float) -> str:
    t, s = report.teacher, report.student
    rows = [
        ("parameters", f"{t.parameters:,}", f"{s.parameters:,}"),
        (
            "size fp32 (MB)",
            f"{(t.size_bytes_fp32 or 0) / 1e6:.2f}",
            f"{(s.size_bytes_fp32 or 0) / 1e6:.2f}",
        ),
        ("latency b=1 (ms)", f"{t.latency_ms_batch1:.3f}", f"{s.latency_ms_batch1:.3f}"),
        ("throughput b=256 (/s)", f"{t.throughput_per_s:,.0f}", f"{s.throughput_per_s:,.0f}"),
        ("runtime", str(t.runtime), str(s.runtime)),
        ("accuracy", f"{report.teacher_accuracy:.4f}", f"{report.student_accuracy:.4f}"),
    ]
    lines = [f"== {title} (device {report.device}, soft labels {report.soft_labels}) =="]
    lines += [f"{name:<24}{a:>18}{b:>18}" for name, a, b in [("", "teacher", "student"), *rows]]
    lines.append(
        f"compression {report.compression_ratio:.1f}x  speedup {report.speedup:.2f}x  "
        f"agreement {report.agreement_top1:.4f}  KL {report.kl_divergence:.4f}  "
        f"eval samples {report.eval_samples}  metrics from {report.metrics_source}"
    )
    timings = "  ".join(f"{k} {v:.2f}s" for k, v in report.timings_s.items())
    lines.append(f"stages: {timings}  (wall {wall_s:.1f}s)")
    return "\n".join(lines)


def sane(report: Report, device: str) -> list[str]:
    problems = []
    if report.device != torch.device(device).type:
        problems.append(f"ran on {report.device}, not {device}")
    for key in ("agreement_top1", "kl_divergence", "student_accuracy", "speedup"):
        value = getattr(report, key)
        if value is None or not math.isfinite(value):
            problems.append(f"{key} is {value}")
    if report.compression_ratio is None or report.compression_ratio < 5:
        problems.append(f"compression only {report.compression_ratio}x")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="small teacher, one run (for CI)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=1, help="student epochs (default 1)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here; use --device cpu", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"torch {torch.__version__} on {name}")

    x, y = digits()
    n_train = round(0.6 * len(x))
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:n_train], perm[n_train:]
    hidden, teacher_epochs = (256, 5) if args.quick else (1200, 20)
    teacher = train_teacher(
        torch.from_numpy(x[tr]), torch.from_numpy(y[tr]), hidden, teacher_epochs
    )

    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_dir:
        tmp = Path(tmp_dir)
        pt2, onnx_path = save_teacher(teacher, torch.from_numpy(x[:4]), tmp)
        np.savez(tmp / "transfer.npz", x=x[tr])  # unlabeled, as users upload them
        np.savez(tmp / "eval.npz", x=x[te], y=y[te])
        runs = [("pt2 teacher, cached", [FileRef.of(pt2, "torch_export")], "cached")]
        if not args.quick:
            both = [FileRef.of(pt2, "torch_export"), FileRef.of(onnx_path, "onnx")]
            runs.append(("pt2 + ONNX ensemble, online", both, "online"))
        for i, (title, teachers, mode) in enumerate(runs):
            spec = JobSpec.model_validate(
                {
                    "teacher_ids": ["t"] * len(teachers),
                    "dataset_id": "d",
                    "distillation": {"soft_labels": mode},
                    "training": {"epochs": args.epochs},
                }
            )
            started = time.perf_counter()
            result = run_distillation(
                teachers,
                FileRef.of(tmp / "transfer.npz", "npz"),
                FileRef.of(tmp / "eval.npz", "npz"),
                spec,
                workdir=tmp / f"work-{i}",
                cache_dir=tmp / "cache",
                device=args.device,
                threads=args.threads,
            )
            print(table(title, result.report, time.perf_counter() - started), flush=True)
            failures += [f"{title}: {p}" for p in sane(result.report, args.device)]
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print("OK" if not failures else f"{len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
