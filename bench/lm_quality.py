"""A byte-level language model distilled token by token, against a twin trained on the text.

    python -m bench.lm_quality --threads 2    # the real run (docs/benchmarks.md: about 50 min)
    python -m bench.lm_quality --quick        # smoke run (tiny, a few minutes)

Real text that ships with every Python: the standard library's top-level ``.py`` files
(``sysconfig``'s stdlib folder), read as bytes (vocabulary 256, no tokenizer to train).
Files are split by a hash of their name into three parts: the teacher's text, the transfer
set (the students' text) and held-out files; no file is in two parts, and nothing of the held
out files is seen by any model before the evaluation. The text is cut into sequences of
``--length`` bytes (every byte real: ``attention_mask`` all ones).

A teacher GPT (the service's own ``gpt`` builder, 4 layers) is trained here by next-token
cross-entropy on its own text and exported to ONNX with ``input_ids`` / ``attention_mask``:
as when a user distils a pretrained model on their own text, the teacher has not seen the
transfer set, so its distributions there are what it predicts on new text, not what it
memorised. Then, for each
size (``size_ratio`` 0.2 and 0.1: 5x and 10x fewer parameters) and each seed, two jobs run
through the engine (``engine.engine.run_distillation``: soft labels, training,
export, evaluation, as a worker runs them, without the HTTP service around it):

- distilled: ``loss: kd`` at T = 1 on the teacher's top-64 logits a token, alpha 0.1;
- twin: the same student, data, schedule and seed with ``alpha: 1`` (next-token
  cross-entropy on the text only: the soft term has weight 0).

Perplexities are recomputed here with onnxruntime from the downloaded ONNX students on the
held-out sequences, and checked against the reports. The table gives means over seeds with
standard errors; the distilled-minus-twin difference is paired by seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from bench.service import machine, markdown_table, write_output

NAMES = ("input_ids", "attention_mask")
VOCAB = 256


def read_corpus(limit_bytes: int) -> dict[str, bytes]:
    """The stdlib's top-level sources as bytes, split by a hash of the file name into
    ``held`` (1 file in 8), ``teacher`` and ``transfer`` (half each of the rest), in sorted
    order, each part cut at ``limit_bytes``."""
    folder = Path(sysconfig.get_paths()["stdlib"])
    parts = {name: bytearray() for name in ("teacher", "transfer", "held")}
    for path in sorted(folder.glob("*.py")):
        digest = hashlib.sha256(path.name.encode()).digest()
        part = "held" if digest[0] % 8 == 0 else ("teacher", "transfer")[digest[1] % 2]
        if len(parts[part]) < limit_bytes:
            parts[part] += path.read_bytes()
    return {name: bytes(text[:limit_bytes]) for name, text in parts.items()}


def sequences(text: bytes, length: int, count: int) -> dict[str, np.ndarray]:
    """``count`` non-overlapping windows of ``length`` bytes (fewer when the text is short);
    a NUL byte (id 0, rare in source) is kept as it is: the mask, not the id, says real."""
    n = min(count, len(text) // length)
    ids = np.frombuffer(text[: n * length], dtype=np.uint8).reshape(n, length).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def train_teacher(
    data: dict[str, np.ndarray], width: int, layers: int, steps: int, seed: int
) -> tuple[torch.nn.Module, Any]:
    from engine.students.gpt import GPTConfig, build_gpt

    config = GPTConfig(NAMES, VOCAB, VOCAB, width, layers, 0, ("int64", "int64"))
    torch.manual_seed(seed)
    model = build_gpt(config)
    x = torch.from_numpy(np.stack([data["input_ids"], data["attention_mask"]], 1)).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        lr = 3e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(x), (32,), generator=generator)
        xb = x[idx]
        logits = model(xb)[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), xb[:, 0, 1:].long().reshape(-1))
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"teacher step {step}/{steps}: loss {loss.item():.3f}", flush=True)
    return model.eval(), config


def perplexity(path: Path, data: dict[str, np.ndarray]) -> float:
    """What anyone computes from the ONNX file: exp of the mean next-token cross-entropy."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    total, count = 0.0, 0
    for start in range(0, len(data["input_ids"]), 64):
        feed = {k: v[start : start + 64] for k, v in data.items()}
        (logits,) = session.run(["logits"], feed)
        z = torch.from_numpy(logits).double()[:, :-1]
        ids = torch.from_numpy(feed["input_ids"])[:, 1:]
        nll = -torch.log_softmax(z, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    return math.exp(total / count)


def run_job(
    teacher: Path,
    transfer: Path,
    held: Path,
    workdir: Path,
    cache: Path,
    *,
    size_ratio: float,
    alpha: float,
    seed: int,
    epochs: int,
) -> dict[str, Any]:
    from core.contracts import FileRef
    from core.spec import JobSpec
    from engine.engine import run_distillation

    spec = JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "student": {"architecture": "gpt", "size_ratio": size_ratio},
            "training": {
                "epochs": epochs,
                "batch_size": 32,
                "learning_rate": 3e-3,
                "seed": seed,
                "warmup_fraction": 0.05,
            },
            "distillation": {"loss": "kd", "temperature": 1.0, "alpha": alpha, "top_k": 64},
            "export_formats": ["onnx"],
        }
    )
    started = time.perf_counter()
    result = run_distillation(
        [FileRef.of(teacher, "onnx")],
        FileRef.of(transfer, "npz"),
        FileRef.of(held, "npz"),
        spec,
        workdir=workdir,
        cache_dir=cache,
    )
    report = result.report
    return {
        "file": result.files["onnx"],
        "parameters": report.student.parameters,
        "teacher_parameters": report.teacher.parameters,
        "reported_ppl": report.student_perplexity,
        "teacher_ppl": report.teacher_perplexity,
        "agreement": report.next_token_agreement,
        "kl": report.kl_per_token,
        "seconds": time.perf_counter() - started,
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--train-sequences", type=int, default=12000)
    parser.add_argument("--eval-sequences", type=int, default=300)
    parser.add_argument(
        "--teacher-sequences", type=int, default=12000, help="the teacher's own training text"
    )
    parser.add_argument("--teacher-width", type=int, default=128)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--ratios", default="0.2,0.1", help="student size_ratio values, comma-separated"
    )
    parser.add_argument("--out", default=None, help="output name (default lm_quality)")
    args = parser.parse_args(argv)
    ratios = [float(r) for r in args.ratios.split(",")]
    if args.quick:
        args.seeds, args.length, args.train_sequences, args.eval_sequences = 2, 32, 300, 40
        args.teacher_sequences = 600
        args.teacher_width, args.teacher_layers, args.teacher_steps = 48, 2, 60
        args.epochs = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    most = max(args.train_sequences, args.teacher_sequences, args.eval_sequences, 1)
    corpus = read_corpus(args.length * most)
    own = sequences(corpus["teacher"], args.length, args.teacher_sequences)
    train = sequences(corpus["transfer"], args.length, args.train_sequences)
    held = sequences(corpus["held"], args.length, args.eval_sequences)
    print(
        f"text: {len(own['input_ids'])} teacher, {len(train['input_ids'])} transfer, "
        f"{len(held['input_ids'])} held-out sequences"
    )
    started = time.perf_counter()
    model, config = train_teacher(
        own, args.teacher_width, args.teacher_layers, args.teacher_steps, seed=0
    )
    teacher_seconds = time.perf_counter() - started
    from bench.service import OUT

    OUT.mkdir(parents=True, exist_ok=True)
    name = args.out or ("lm_quality-quick" if args.quick else "lm_quality")
    jobs_log = OUT / f"{name}-jobs.jsonl"
    jobs_log.write_text("")
    rows: list[list[Any]] = []
    results: dict[tuple[float, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="lm-quality-") as tmp_dir:
        tmp = Path(tmp_dir)
        from engine.export import export_student

        example = torch.from_numpy(
            np.stack([held["input_ids"][:2], held["attention_mask"][:2]], 1)
        ).float()
        teacher_file = export_student(model, "gpt", config, example, tmp / "teacher", ["onnx"])
        teacher_path = teacher_file["onnx"]
        teacher_ppl = perplexity(teacher_path, held)
        own_sample = {k: v[: len(held["input_ids"])] for k, v in own.items()}
        teacher_on = {
            "own text": perplexity(teacher_path, own_sample),
            "transfer set": perplexity(teacher_path, train),
        }
        print(f"teacher perplexity: held-out {teacher_ppl:.3f}, {teacher_on}", flush=True)
        transfer = tmp / "train.npz"
        np.savez(transfer, **train)
        held_path = tmp / "held.npz"
        np.savez(held_path, **held)
        for ratio in ratios:
            for kind, alpha in (("distilled", 0.1), ("twin", 1.0)):
                for seed in range(args.seeds):
                    workdir = tmp / f"job-{ratio}-{kind}-{seed}"
                    out = run_job(
                        teacher_path,
                        transfer,
                        held_path,
                        workdir,
                        tmp / "cache",
                        size_ratio=ratio,
                        alpha=alpha,
                        seed=seed,
                        epochs=args.epochs,
                    )
                    out["ppl"] = perplexity(out["file"], held)
                    assert abs(out["ppl"] - out["reported_ppl"]) <= 1e-4 * out["ppl"], out
                    results.setdefault((ratio, kind), []).append(out)
                    log = {k: v for k, v in out.items() if k != "file"}
                    with open(jobs_log, "a") as file:  # each job as it ends
                        file.write(json.dumps({"ratio": ratio, "kind": kind, "seed": seed, **log}))
                        file.write("\n")
                    print(
                        f"ratio {ratio} {kind} seed {seed}: ppl {out['ppl']:.4f} "
                        f"(teacher {teacher_ppl:.4f}), agreement {out['agreement']:.4f}, "
                        f"{out['parameters']} parameters, {out['seconds']:.0f} s",
                        flush=True,
                    )
    teacher_parameters = sum(p.numel() for p in model.parameters())
    summary: dict[str, Any] = {
        "teacher_ppl": teacher_ppl,
        "teacher_ppl_on": teacher_on,
        "teacher_parameters": teacher_parameters,
    }
    for ratio in ratios:
        distilled, twin = results[(ratio, "distilled")], results[(ratio, "twin")]
        d_ppl, d_se = mean_se([r["ppl"] for r in distilled])
        t_ppl, t_se = mean_se([r["ppl"] for r in twin])
        gain, gain_se = mean_se([b["ppl"] - a["ppl"] for a, b in zip(distilled, twin, strict=True)])
        agree, agree_se = mean_se([r["agreement"] for r in distilled])
        params = distilled[0]["parameters"]
        rows.append(
            [
                f"{teacher_parameters / params:.1f}x ({params:,})",
                f"{d_ppl:.3f} ± {d_se:.3f}",
                f"{t_ppl:.3f} ± {t_se:.3f}",
                f"{gain:.3f} ± {gain_se:.3f}",
                f"{d_ppl / teacher_ppl:.3f}",
                f"{agree:.3f} ± {agree_se:.3f}",
            ]
        )
        summary[str(ratio)] = {
            "distilled_ppl": d_ppl,
            "distilled_se": d_se,
            "twin_ppl": t_ppl,
            "twin_se": t_se,
            "twin_minus_distilled": gain,
            "twin_minus_distilled_se": gain_se,
            "beats_twin_by_2se": gain > 2 * gain_se,
            "ratio_to_teacher": d_ppl / teacher_ppl,
        }
    table = markdown_table(
        [
            "student (fewer parameters)",
            "distilled ppl",
            "twin ppl (CE only)",
            "twin − distilled (paired)",
            "distilled / teacher",
            "next-token agreement",
        ],
        rows,
    )
    text = "\n".join(
        [
            f"Teacher: {teacher_parameters:,} parameters, held-out perplexity {teacher_ppl:.3f} "
            f"({args.teacher_steps} steps, {teacher_seconds:.0f} s).",
            f"Settings: {json.dumps(vars(args))}",
            f"Machine: {machine()}",
            "",
            table,
            "",
            json.dumps(summary, indent=1),
        ]
    )
    print(text)
    write_output(name, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
