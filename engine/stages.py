"""The engine's stages: each a short function with typed input and output, testable alone.

``engine.run_stages`` chains them:

    check_inputs → split_stage → soft_label_stage → student_stage → teacher_eval_stage
    → (targets.make_targets) → export_check_stage → train_stage → time_teacher_stage
    → export_stage → evaluate_stage → report_stage

Every stage reads the job's ``Context`` and rows (``rows.py``), never a whole transfer set:
memory is O(batch), not O(N). A stage that takes time records it in ``Context.timings``
(the report's ``timings_s``) and reports progress through ``Context.progress``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.contracts import Report, soft_labels_file
from core.enums import ExportFormat
from core.errors import ErrorCode
from core.spec import JobSpec, TrainingSpec
from engine import evaluate as ev
from engine.augment import make_augment
from engine.device import exact_fp32
from engine.errors import Stopped, UserError
from engine.export import (
    ONNX_FORMATS,
    VARIANTS,
    ExportError,
    export_student,
    runtime_for,
    verify_exports,
)
from engine.jacobian import JacobianMatching
from engine.progress import Reporter
from engine.report import (
    THROUGHPUT_BATCH,
    build_report,
    measure_pair,
    measure_speed,
    model_section,
    one_torch_thread,
)
from engine.rows import Rows, SubsetRows, in_memory_if_small, row_chunks
from engine.soft_labels import (
    SoftLabels,
    TeacherLike,
    cache_key,
    cached_soft_labels,
    teacher_logits,
)
from engine.split import Split, held_out_split
from engine.students import (
    TokenShape,
    config_to_dict,
    count_parameters,
    floored_target,
    init_student,
    size_student,
    student_target,
)
from engine.targets import SoftTargets
from engine.tokens import ids_index
from engine.trainer import TrainConfig, TrainResult, train

METRICS_PREFERENCE = ("onnx", "torch_export", "safetensors")
VARIANT_BATCH = 32  # the report's variants: throughput at a serving batch, not the 256 above
# Text models are served in small batches of whole sequences: their throughput at batch 32.
TOKEN_THROUGHPUT_BATCH = 32
CPU = torch.device("cpu")
# The per-epoch "eval_agreement" is a progress signal (the report evaluates every eval row):
# a strided subset of at most this many rows keeps its cost flat in the eval set's size.
PROGRESS_EVAL_ROWS = 2048
# Sets under this many bytes of float32 are read into memory once (a per-batch read of a
# small set costs more than the copy); bigger ones are read one batch at a time.
IN_MEMORY_BYTES = 256 << 20


@dataclass
class Context:
    """What every stage reads: the job's inputs, its device, folders and side channels."""

    teachers: Sequence[TeacherLike]
    spec: JobSpec
    device: torch.device
    workdir: Path
    cache_dir: Path | None
    identity: dict[str, Any] | None
    progress: Reporter
    should_stop: Callable[[], bool]
    checkpoint_every: int
    inference_batch: int = 1024
    timings: dict[str, float] = field(default_factory=dict)
    # The job's history (finished epochs, checkpoints, a resume), from the trainer.
    on_event: Callable[[dict[str, Any]], None] = lambda ev: None
    checkpoint_every_seconds: float = 0.0

    def stop_point(self) -> None:
        if self.should_stop():
            raise Stopped()


# --- check and split ----------------------------------------------------------------------


def check_inputs(teachers: Sequence[TeacherLike], rows: Rows, what: str) -> None:
    """Teachers agree on classes, samples have the teacher's shape, every value is finite
    and labels name the teacher's classes: one pass over the rows, a chunk at a time."""
    classes = {t.num_classes for t in teachers}
    if len(classes) != 1:
        raise UserError(
            ErrorCode.BAD_SPEC, f"teacher_ids: the teachers disagree on classes {sorted(classes)}"
        )
    expected, got = list(teachers[0].input_shape[1:]), list(rows.sample_shape)
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=False)
    ):
        raise UserError(
            ErrorCode.SHAPE_MISMATCH, f"{what}: samples of shape {got}, teacher expects {expected}"
        )
    vocab = getattr(teachers[0], "vocab_size", None)
    if vocab is not None and _ids_outside(rows, teachers[0], vocab):
        raise UserError(
            ErrorCode.BAD_INPUTS, f"{what}: token ids outside the teacher's vocabulary [0, {vocab})"
        )
    bad = 0 if rows.raw_dtype.kind in "biu" else _non_finite_rows(rows)
    if bad:
        raise UserError(
            ErrorCode.NON_FINITE_INPUTS,
            f"{what}: {bad} of {rows.num_samples} samples contain NaN or infinity",
        )
    if rows.has_labels and _labels_outside(rows, classes.pop()):
        raise UserError(ErrorCode.BAD_LABELS, f"{what}: labels outside the teacher's classes")


def _ids_outside(rows: Rows, teacher: TeacherLike, vocab: int) -> bool:
    names = [t.name for t in getattr(teacher, "token_inputs", None) or []]
    k = ids_index(names)
    for _, chunk in row_chunks(rows):
        ids = chunk[:, k]
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
            return True
    return False


def _non_finite_rows(rows: Rows) -> int:
    bad = 0
    for _, chunk in row_chunks(rows):
        # NaN and ±inf survive a sum, so a finite sum (one pass, no mask) clears the chunk;
        # only a non-finite one (or a finite-value overflow) pays for the per-row count.
        if not bool(torch.isfinite(chunk.sum())):
            bad += int((~torch.isfinite(chunk.reshape(len(chunk), -1)).all(dim=1)).sum())
    return bad


def _labels_outside(rows: Rows, classes: int) -> bool:
    step = 1 << 20
    for start in range(0, rows.num_samples, step):
        labels = rows.labels(np.arange(start, min(rows.num_samples, start + step)))
        if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= classes):
            return True
    return False


@dataclass
class Splits:
    train: Rows
    eval: Rows
    train_index: torch.Tensor  # training row -> transfer row (for the stored soft labels)
    split: Split | None  # the held-out rule, when no eval set was given
    transfer_samples: int


def split_stage(transfer: Rows, held: Rows | None, training: TrainingSpec) -> Splits:
    """With an eval set, train on every transfer row; else hold out a seeded split. Either
    side is read into memory once when small (``IN_MEMORY_BYTES``), else read per batch."""
    if held is not None:
        n = transfer.num_samples
        train = in_memory_if_small(transfer, IN_MEMORY_BYTES)
        return Splits(train, in_memory_if_small(held, IN_MEMORY_BYTES), torch.arange(n), None, n)
    split = held_out_split(transfer.num_samples, training.eval_fraction, training.seed)
    train = in_memory_if_small(SubsetRows(transfer, split.train.numpy()), IN_MEMORY_BYTES)
    held_out = in_memory_if_small(SubsetRows(transfer, split.eval.numpy()), IN_MEMORY_BYTES)
    return Splits(train, held_out, split.train, split, transfer.num_samples)


# --- soft labels and the student ----------------------------------------------------------


def soft_label_stage(ctx: Context, transfer: Rows) -> SoftLabels | None:
    """The teachers' logits over the whole transfer set (the cache does not depend on the
    split), from the cache when present; None in online mode."""
    started = time.perf_counter()
    ctx.progress.emit("soft_labeling", 0.0)
    dist = ctx.spec.distillation
    if ctx.spec.soft_label_mode != "cached":
        ctx.timings["soft_labeling"] = time.perf_counter() - started
        return None
    key = None
    if ctx.identity is not None and ctx.cache_dir is not None:
        key = cache_key(
            ctx.identity["teachers"],
            ctx.identity["dataset"],
            sample_shape=transfer.sample_shape,
            mean=ctx.spec.preprocessing.mean,
            std=ctx.spec.preprocessing.std,
            top_k=dist.top_k,
        )
    # Without a key the labels are this job's alone: mapped from its own folder.
    path = ctx.workdir / "soft-labels.safetensors"
    if key is not None and ctx.cache_dir is not None:
        path = soft_labels_file(ctx.cache_dir, key)

    def on_fraction(done: float) -> None:
        ctx.stop_point()
        ctx.progress.emit("soft_labeling", done)

    soft = cached_soft_labels(
        ctx.teachers,
        transfer,
        ctx.device,
        top_k=dist.top_k,
        path=path,
        key=key,
        batch_size=ctx.inference_batch,
        on_fraction=on_fraction,
    )
    ctx.timings["soft_labeling"] = time.perf_counter() - started
    if key is not None:  # shareable: the worker copies them where other hosts find them
        ctx.on_event({"event": "soft_labels", "key": key})
    return soft


@dataclass
class Student:
    name: str
    config: Any
    module: nn.Module
    target: float  # the parameter count it was sized to
    teacher_sizes: list[int | None]  # each teacher's parameters (None when unknown)

    @property
    def teacher_parameters(self) -> int | None:
        """The whole ensemble's (what the student replaces), when every size is known."""
        known = [p for p in self.teacher_sizes if p is not None]
        return sum(known) if len(known) == len(self.teacher_sizes) else None


def student_stage(ctx: Context, train: Rows) -> Student:
    """Size the student from the teachers and fit its input statistics to the training rows
    (one streaming pass). Sizing uses the largest teacher, so the student compresses every
    single teacher of an ensemble by 1/size_ratio."""
    spec = ctx.spec.student
    sizes = [t.parameters for t in ctx.teachers]
    known = [p for p in sizes if p is not None]
    largest = max(known) if len(known) == len(sizes) else None
    target, cap = student_target(largest, spec.size_ratio, spec.max_parameters)
    shape, classes = train.sample_shape, ctx.teachers[0].num_classes
    tokens = token_shape(ctx.teachers[0], train)
    if spec.hidden is None and tokens is None:
        target = floored_target(target, cap, spec.architecture, shape, classes)
    name, config = size_student(
        spec.architecture, shape, classes, target=target, cap=cap, hidden=spec.hidden, tokens=tokens
    )
    chunks = (chunk for _, chunk in row_chunks(train))
    module = init_student(name, config, seed=ctx.spec.training.seed, inputs=chunks)
    return Student(name, config, module, target, sizes)


def token_shape(teacher: TeacherLike, rows: Rows) -> TokenShape | None:
    """A token teacher's input names and vocabulary (its embedding's size, else the largest
    id in the rows + 1)."""
    inputs = getattr(teacher, "token_inputs", None)
    if inputs is None:
        return None
    names = tuple(t.name for t in inputs)
    vocab = getattr(teacher, "vocab_size", None)
    if vocab is None:
        k = ids_index(names)
        vocab = 1 + max(int(chunk[:, k].max()) for _, chunk in row_chunks(rows))
    lm = getattr(teacher, "task", "classification") == "language_model"
    return TokenShape(names, int(vocab), tuple(t.dtype for t in inputs), language_model=lm)


# --- the teacher on the eval rows, and training -------------------------------------------


@dataclass
class Reference:
    """The teachers on the eval rows: what the student is measured against."""

    logits: torch.Tensor  # [K, N_eval, C] float32: C numbers a sample, never the inputs
    probs: torch.Tensor  # the (mean) distribution at T = 1, float64 [N_eval, C]
    labels: torch.Tensor | None
    progress_x: torch.Tensor  # a strided subset of the eval rows, for per-epoch progress
    progress_p: torch.Tensor
    seconds: float


def teacher_eval_stage(ctx: Context, eval_rows: Rows) -> Reference:
    started = time.perf_counter()
    batch = ctx.inference_batch
    with exact_fp32():  # the report's teacher numbers: what anyone gets running it in fp32
        logits = torch.stack(
            [
                ev.predict(partial(teacher_logits, t, device=ctx.device), eval_rows, batch)
                for t in ctx.teachers
            ]
        )
    probs = ev.teacher_probs(logits)
    n = eval_rows.num_samples
    # Strided rather than the first rows: an eval set may come sorted by class.
    picked = np.arange(0, n, -(-n // PROGRESS_EVAL_ROWS), dtype=np.int64)
    labels = eval_rows.labels(np.arange(n, dtype=np.int64))
    return Reference(
        logits,
        probs,
        labels,
        eval_rows.read(picked).contiguous(),
        probs[torch.from_numpy(picked)],
        time.perf_counter() - started,
    )


def train_config(ctx: Context) -> TrainConfig:
    """The trainer's settings: the job's training and distillation spec, the context's
    checkpoint cadences."""
    tr, dist = ctx.spec.training, ctx.spec.distillation
    return TrainConfig(
        epochs=tr.epochs,
        batch_size=tr.batch_size,
        learning_rate=tr.learning_rate,
        weight_decay=tr.weight_decay,
        warmup_fraction=tr.warmup_fraction,
        temperature=dist.temperature,
        alpha=dist.alpha,
        seed=tr.seed,
        checkpoint_every=ctx.checkpoint_every,
        checkpoint_every_seconds=ctx.checkpoint_every_seconds,
        loss=dist.loss,
    )


def relay_train_event(ctx: Context, event: dict[str, Any]) -> None:
    """A trainer's history event to the job, and an epoch's end to its progress."""
    ctx.on_event(event)
    if event["event"] == "epoch":
        ctx.progress.epoch_end(event["record"])


def train_stage(
    ctx: Context, student: Student, splits: Splits, targets: SoftTargets, ref: Reference
) -> TrainResult:

    def on_epoch(epoch: int, model: nn.Module) -> dict[str, Any]:
        logits = ev.predict(lambda xb: model(xb.to(ctx.device)), ref.progress_x, 1024)
        return {"eval_agreement": ev.agreement(ref.progress_p, logits)}

    result = train(
        student.module,
        splits.train,
        None,
        targets,
        train_config(ctx),
        device=ctx.device,
        workdir=ctx.workdir / "checkpoints",
        fingerprint=_fingerprint(ctx, student, splits),
        on_step=ctx.progress.step,
        on_epoch=on_epoch,
        should_stop=ctx.should_stop,
        on_event=partial(relay_train_event, ctx),
        **_objective(ctx, splits),
    )
    ctx.timings["training"] = result.seconds
    ctx.stop_point()
    return result


def _objective(ctx: Context, splits: Splits) -> dict[str, Any]:
    """The trainer's augmentation and derivative-matching objective, when the spec asks."""
    spec, dist = ctx.spec, ctx.spec.distillation
    classes = ctx.teachers[0].num_classes
    augment = make_augment(
        spec.augmentation, splits.train.sample_shape, spec.training.seed, classes
    )
    jacobian = None
    if dist.loss == "kd_jacobian":
        jacobian = JacobianMatching(
            ctx.teachers, dist.temperature, dist.alpha, dist.jacobian_weight, spec.training.seed
        )
    return {"augment": augment, "jacobian": jacobian}


def objective_report(spec: JobSpec) -> dict[str, Any]:
    """The report's record of what trained the student: loss and augmentation."""
    dist = spec.distillation
    return {
        "loss": dist.loss,
        "jacobian_weight": dist.jacobian_weight if dist.loss == "kd_jacobian" else None,
        "augmentation": (
            spec.augmentation.model_dump(mode="json") if spec.augmentation.active else None
        ),
    }


def _fingerprint(ctx: Context, student: Student, splits: Splits) -> str:
    """What a checkpoint must match to be resumed: the job's inputs and the student."""
    blob = json.dumps(
        {
            "spec": ctx.spec.model_dump(mode="json", exclude={"export_formats", "export"}),
            "identity": ctx.identity,
            "student": config_to_dict(student.name, student.config),
            "transfer_shape": [splits.transfer_samples, *splits.train.sample_shape],
            "split": None if splits.split is None else splits.split.describe(0)["indices_sha256"],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


# --- timing, export, evaluation, report ---------------------------------------------------


@dataclass
class TeacherTimer:
    """What times the teacher: its forward pass and the sample on the device it reads from
    (the timing is the model, not a copy)."""

    fn: Callable[[torch.Tensor], Any]
    sample: torch.Tensor


def time_teacher_stage(
    ctx: Context, sample: torch.Tensor, ref: Reference, steps: int
) -> TeacherTimer:
    """The evaluating stage begins (the teacher's eval logits were computed before training,
    for progress); the teacher is timed beside the student in ``evaluate_stage``."""
    ctx.progress.emit("evaluating", 0.0, epoch=ctx.spec.training.epochs, step=steps)
    dev = ctx.device
    on_host = any(t.format == "onnx" for t in ctx.teachers)
    ctx.timings["evaluating"] = ref.seconds
    return TeacherTimer(
        lambda xb: [teacher_logits(t, xb, dev, online=True) for t in ctx.teachers],
        sample if on_host else sample.to(dev),
    )


@dataclass
class Exported:
    files: dict[str, Path]  # every written format (and the JSON config)
    published: dict[ExportFormat, Path]  # the formats the job asked for
    max_abs_diff: dict[str, float]


def export_check_stage(ctx: Context, student: Student, sample: torch.Tensor) -> None:
    """Export the untrained student in the asked formats and check the files, then delete
    them: a student that cannot be exported fails the job now, not after its training."""
    started = time.perf_counter()
    module = copy.deepcopy(student.module).cpu().eval()
    folder = ctx.workdir / "export-check"
    try:
        files = export_student(
            module, student.name, student.config, sample, folder, ctx.spec.export_formats
        )
        verify_exports(module, files, sample)
    except (ExportError, MemoryError, OSError):
        raise
    except Exception as exc:  # the exporters' own errors: the same bug, said before training
        raise ExportError(f"the student does not export: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ctx.timings["export_check"] = time.perf_counter() - started


def export_stage(
    ctx: Context, student: Student, sample: torch.Tensor, steps: int, transfer: Rows
) -> Exported:
    """Write each format and check it against the PyTorch student on real rows; int8
    is calibrated on ``export.calibration_samples`` rows of ``transfer``, evenly spaced."""
    started = time.perf_counter()
    ctx.progress.emit("exporting", 0.0, epoch=ctx.spec.training.epochs, step=steps)
    module = student.module.cpu().eval()
    formats = ctx.spec.export_formats
    calibration = None
    if "onnx_int8" in formats:
        n = min(transfer.num_samples, ctx.spec.export.calibration_samples)
        calibration = transfer.read(np.linspace(0, transfer.num_samples - 1, n).astype(np.int64))
    files = export_student(
        module, student.name, student.config, sample, ctx.workdir / "export", formats, calibration
    )
    diffs = verify_exports(module, files, sample)
    published = {ExportFormat(k): v for k, v in files.items() if k in formats}
    ctx.timings["exporting"] = time.perf_counter() - started
    ctx.stop_point()
    return Exported(files, published, diffs)


@dataclass
class Evaluated:
    metrics: dict[str, Any]  # from the first format of METRICS_PREFERENCE that was written
    by_format: dict[str, dict[str, Any]]
    source: str
    speed: dict[str, float]
    runtime: str
    teacher_speed: dict[str, float]
    speedup: dict[str, Any]
    variants: list[dict[str, Any]] = field(default_factory=list)


def evaluate_stage(
    ctx: Context,
    exported: Exported,
    ref: Reference,
    eval_rows: Rows,
    module: nn.Module,
    sample: torch.Tensor,
    teacher: TeacherTimer,
) -> Evaluated:
    """Run each exported file over every eval row; time the student's runtime interleaved
    with the teacher."""
    started = time.perf_counter()
    files, by_format = exported.files, {}
    tokens = _sequence_length(ctx, eval_rows) is not None
    for fmt in (*METRICS_PREFERENCE, *VARIANTS):
        if fmt in files:
            # A token student's int8 file is quantized dynamically: its activations' scale is
            # taken per run, so one row's answer depends on the rows beside it. It is counted
            # a row at a time, as a request served alone gets it (and as anyone can rerun it).
            batch = 1 if tokens and fmt == "onnx_int8" else ctx.inference_batch
            logits = ev.predict(runtime_for(fmt, files[fmt]), eval_rows, batch)
            by_format[fmt] = ev.eval_metrics(ref.logits, logits, ref.labels)
    source = next(f for f in METRICS_PREFERENCE if f in by_format)
    student_fn, runtime = _student_runtime(ctx.teachers, files, module, ctx.device)
    # Torch on the CPU on both sides: one thread, timed by its CPU time, so a busy machine
    # changes neither figure. ONNX Runtime computes on its own threads: wall time.
    cpu_torch = runtime == "torch-cpu" and all(t.format != "onnx" for t in ctx.teachers)
    with one_torch_thread() if cpu_torch else contextlib.nullcontext():
        teacher_speed, speed, speedup = measure_pair(
            teacher.fn,
            teacher.sample,
            student_fn,
            sample if runtime.endswith("cpu") else sample.to(ctx.device),
            ctx.device,
            clock="thread_cpu" if cpu_torch else "wall",
            batch=TOKEN_THROUGHPUT_BATCH if _sequence_length(ctx, eval_rows) else THROUGHPUT_BATCH,
        )
        speedup["threads"] = torch.get_num_threads() if ctx.device.type == "cpu" else None
    variants = measure_variants(ctx, exported, by_format, sample)
    ctx.timings["evaluating"] += time.perf_counter() - started
    return Evaluated(
        by_format[source], by_format, source, speed, runtime, teacher_speed, speedup, variants
    )


def measure_variants(
    ctx: Context,
    exported: Exported,
    by_format: dict[str, dict[str, Any]],
    sample: torch.Tensor,
) -> list[dict[str, Any]]:
    """The report's ``variants``: each downloadable file as a user runs it on this CPU
    (ONNX Runtime for the ONNX files, torch for the others), its size, speed at batch 1 and
    at ``VARIANT_BATCH``, and its agreement and accuracy on the eval rows. A variant more
    than ``export.agreement_margin`` below the fp32 ONNX student's agreement is flagged."""
    fp32 = by_format.get("onnx")
    margin = ctx.spec.export.agreement_margin
    rows = []
    for fmt, path in exported.published.items():
        measured = by_format[fmt]
        speed = measure_speed(runtime_for(fmt, path), sample, CPU, batch=VARIANT_BATCH)
        row = {
            "format": fmt,
            "size_bytes": path.stat().st_size,
            "latency_ms_batch1": speed["latency_ms_batch1"],
            "throughput_per_s": speed["throughput_per_s"],
            "throughput_batch": VARIANT_BATCH,
            "runtime": "onnxruntime-cpu" if fmt in ONNX_FORMATS else "torch-cpu",
            "agreement_top1": measured["agreement_top1"],
            "student_accuracy": measured["student_accuracy"],
            "kl_divergence": measured["kl_divergence"],
            "agreement_loss": None,
            "within_margin": None,
        }
        if fmt in VARIANTS and fp32 is not None:
            loss = fp32["agreement_top1"] - measured["agreement_top1"]
            row["agreement_loss"] = loss
            row["within_margin"] = loss <= margin + 1e-12
        rows.append(row)
    return rows


def _student_runtime(
    teachers: Sequence[TeacherLike], files: dict[str, Path], student: nn.Module, dev: torch.device
) -> tuple[Callable[[torch.Tensor], Any], str]:
    """Time the student the way the teacher is timed: ONNX Runtime against ONNX teachers,
    the exported program in torch against torch teachers."""
    if teachers[0].format == "onnx" and "onnx" in files:
        return runtime_for("onnx", files["onnx"]), "onnxruntime-cpu"
    if dev.type == "cpu" and "torch_export" in files:
        return runtime_for("torch_export", files["torch_export"]), "torch-cpu"
    model = student.to(dev).eval()
    return (lambda xb: model(xb.to(dev))), f"torch-{dev.type}"


def _sequence_length(ctx: Context, rows: Rows) -> int | None:
    if getattr(ctx.teachers[0], "token_inputs", None) is None:
        return None
    return int(rows.sample_shape[-1])


def report_stage(
    ctx: Context,
    student: Student,
    splits: Splits,
    trained: TrainResult,
    exported: Exported,
    evaluated: Evaluated,
) -> Report:
    """The single student's report (the dict of ``build_report`` validated once, here)."""
    dev, dist, tr = ctx.device, ctx.spec.distillation, ctx.spec.training
    runtimes = {
        "onnxruntime-cpu" if t.format == "onnx" else f"torch-{dev.type}" for t in ctx.teachers
    }
    fields = build_report(
        teacher=model_section(
            student.teacher_parameters, evaluated.teacher_speed, "+".join(sorted(runtimes))
        ),
        student=model_section(
            count_parameters(student.module), evaluated.speed, evaluated.runtime, exported.published
        ),
        metrics=evaluated.metrics,
        device=dev,
        soft_labels=ctx.spec.soft_label_mode,
        timings=ctx.timings,
        speedup=evaluated.speedup,
        extra={
            "metrics_source": evaluated.source,
            "metrics_by_format": evaluated.by_format,
            "export_max_abs_diff": exported.max_abs_diff,
            "variants": evaluated.variants,
            # Rebuilds the student from the registry (also in the safetensors metadata).
            "student_architecture": config_to_dict(student.name, student.config),
            "student_target_parameters": round(student.target),
            # Token teachers: latency and throughput are measured on eval rows of this length.
            "sequence_length": _sequence_length(ctx, splits.eval),
            "teachers": len(ctx.teachers),
            "teacher_parameters_each": student.teacher_sizes,
            "eval_split": (
                {"source": "eval_dataset"} if splits.split is None else splits.split.describe()
            ),
            "train_samples": splits.train.num_samples,
            "steps": trained.steps,
            "final_train_loss": trained.final_loss,
            "temperature": dist.temperature,
            "alpha": dist.alpha,
            "seed": tr.seed,
            **objective_report(ctx.spec),
        },
    )
    return Report.model_validate(fields)
