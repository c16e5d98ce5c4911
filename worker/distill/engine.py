"""The engine's entry point: teacher files + transfer set + spec → student files + report.

Stages, in the order the job reports them (DESIGN.md, "Job lifecycle"):
soft_labeling → training → evaluating → exporting. ``run_distillation`` loads the files
through the guarded loaders; ``distill`` does the work on loaded teachers and tensors
(tests and benchmarks call it directly with tiny in-memory teachers).

Every number in the report comes from what a user downloads: agreement, KL and accuracy
are recomputed by running the exported student file (ONNX when exported, else .pt2, else
the safetensors rebuild), and each exported file is first checked against the PyTorch
student.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.spec import JobSpec
from worker.distill import evaluate as ev
from worker.distill.device import exact_fp32, resolve_device, set_threads
from worker.distill.errors import Cancelled, UserError
from worker.distill.export import export_student, runtime_for, verify_exports
from worker.distill.losses import soft_targets
from worker.distill.report import build_report, measure_speed, model_section
from worker.distill.soft_labels import (
    SoftLabels,
    TeacherLike,
    cache_key,
    cached_soft_labels,
    teacher_logits,
)
from worker.distill.split import held_out_split
from worker.distill.students import (
    config_to_dict,
    count_parameters,
    init_student,
    size_student,
    student_target,
)
from worker.distill.trainer import TrainConfig, train

Progress = Callable[[dict[str, Any]], None]

# Share of the whole job's progress bar each stage ends at.
STAGE_END = {"soft_labeling": 0.10, "training": 0.85, "evaluating": 0.90, "exporting": 1.0}
STAGE_START = {"soft_labeling": 0.0, "training": 0.10, "evaluating": 0.85, "exporting": 0.90}
INFERENCE_ELEMENTS = 1 << 24  # input elements per teacher batch (64 MiB of fp32)
METRICS_PREFERENCE = ("onnx", "torch_export", "safetensors")
# Training progress crosses a pipe to the worker, which writes the job row at most every
# 0.5 s: one line per step (9,380 in a 20-epoch MNIST job) only made the child block on a
# full pipe (about 9 s of that job) and the worker parse lines it then dropped.
STEP_EVENTS_EVERY_S = 0.25
# The per-epoch "eval_agreement" is a progress signal (the report evaluates every eval row):
# a strided subset of at most this many rows keeps its cost flat in the eval set's size.
PROGRESS_EVAL_ROWS = 2048
# Cached soft labels become the softened targets of the whole training split once, before
# training, when they fit in this many bytes (fp32, N × C); else they are softened per batch.
PRECOMPUTED_PROBS_BYTES = 1 << 30
PRECOMPUTE_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class Source:
    path: Path
    format: str
    sha256: str


@dataclass
class DistillResult:
    files: dict[str, Path]
    report: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


def run_distillation(
    teachers: Sequence[Source],
    transfer: Source,
    eval_set: Source | None,
    spec: JobSpec,
    *,
    workdir: Path,
    cache_dir: Path,
    on_progress: Progress = lambda ev: None,
    should_stop: Callable[[], bool] = lambda: False,
    device: str | None = None,
    checkpoint_every: int = 1000,
    checkpoint_every_s: float = 0.0,
    allow_torchscript: bool = False,
    threads: int | None = None,
) -> DistillResult:
    """Distil ``teachers`` into a student; re-calling with the same ``workdir`` resumes.

    Raises ``UserError`` for a teacher, dataset or spec that cannot work and ``Cancelled``
    when ``should_stop()`` turns true (after a checkpoint).
    """
    from worker.distill.data import load_dataset
    from worker.distill.teachers import load_teacher

    dev = resolve_device(device)
    set_threads(threads)
    loaded = [
        load_teacher(s.path, s.format, allow_torchscript=allow_torchscript, device=dev.type)
        for s in teachers
    ]
    dims = loaded[0].input_shape[1:]
    # Images are resized to the teacher's size; with a dynamic dimension, left as they are.
    shape = None if any(d is None for d in dims) else [int(d) for d in dims if d is not None]
    prep = spec.preprocessing
    data = load_dataset(
        transfer.path, transfer.format, sample_shape=shape, mean=prep.mean, std=prep.std
    )
    held = None
    if eval_set is not None:
        held = load_dataset(
            eval_set.path, eval_set.format, sample_shape=shape, mean=prep.mean, std=prep.std
        )
    return distill(
        loaded,
        data.x,
        data.y,
        None if held is None else held.x,
        None if held is None else held.y,
        spec,
        workdir=workdir,
        cache_dir=cache_dir,
        identity={
            "teachers": [s.sha256 for s in teachers],
            "dataset": transfer.sha256,
            "eval_dataset": None if eval_set is None else eval_set.sha256,
        },
        on_progress=on_progress,
        should_stop=should_stop,
        device=dev,
        checkpoint_every=checkpoint_every,
        checkpoint_every_s=checkpoint_every_s,
    )


def _check_inputs(
    teachers: Sequence[TeacherLike], x: torch.Tensor, y: torch.Tensor | None, what: str
) -> None:
    classes = {t.num_classes for t in teachers}
    if len(classes) != 1:
        raise UserError(
            "bad_spec", f"teacher_ids: the teachers disagree on classes {sorted(classes)}"
        )
    expected = [d for d in teachers[0].input_shape[1:]]
    got = list(x.shape[1:])
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=False)
    ):
        raise UserError(
            "shape_mismatch", f"{what}: samples of shape {got}, teacher expects {expected}"
        )
    # NaN and ±inf survive a sum, so a finite sum (one pass, no mask) clears every value;
    # only a non-finite one (or a finite-value overflow) pays for the exact per-row count.
    if not bool(torch.isfinite(x.sum())):
        finite = torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        bad = int((~finite).sum())
    else:
        bad = 0
    if bad:
        raise UserError(
            "non_finite_inputs", f"{what}: {bad} of {len(x)} samples contain NaN or infinity"
        )
    if y is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= classes.pop()):
        raise UserError("bad_labels", f"{what}: labels outside the teacher's classes")


def _emit(on_progress: Progress, stage: str, fraction: float, epochs: int, **extra: Any) -> None:
    lo, hi = STAGE_START[stage], STAGE_END[stage]
    event = {
        "stage": stage,
        "progress": lo + (hi - lo) * min(1.0, fraction),
        "epochs": epochs,
        "epoch": extra.pop("epoch", None),
        "step": extra.pop("step", None),
        "metrics": extra.pop("metrics", {}),
    }
    on_progress(event)


def distill(
    teachers: Sequence[TeacherLike],
    x: torch.Tensor,
    y: torch.Tensor | None,
    eval_x: torch.Tensor | None,
    eval_y: torch.Tensor | None,
    spec: JobSpec,
    *,
    workdir: Path,
    cache_dir: Path | None,
    identity: dict[str, Any] | None = None,
    on_progress: Progress = lambda ev: None,
    should_stop: Callable[[], bool] = lambda: False,
    device: torch.device | None = None,
    checkpoint_every: int = 1000,
    checkpoint_every_s: float = 0.0,
) -> DistillResult:
    """The engine on loaded teachers and whole tensors. ``identity`` (teacher and dataset
    sha256s) keys the soft-label cache; without it nothing is cached."""
    dev = device or resolve_device()
    tr, dist = spec.training, spec.distillation
    epochs = tr.epochs
    timings: dict[str, float] = {}
    _check_inputs(teachers, x, y, "dataset")
    if eval_x is not None:
        _check_inputs(teachers, eval_x, eval_y, "eval dataset")
    num_classes = teachers[0].num_classes
    sample_shape = tuple(int(s) for s in x.shape[1:])

    inference_batch = max(1, min(8192, INFERENCE_ELEMENTS // max(1, math.prod(sample_shape))))

    # Held-out split: only when there is no eval set (seeded, reproducible; see split.py).
    split = None
    train_idx = torch.arange(len(x))
    if eval_x is None:
        split = held_out_split(len(x), tr.eval_fraction, tr.seed)
        train_idx = split.train
        eval_x, eval_y = x[split.eval], None if y is None else y[split.eval]
    x_train = x[train_idx] if split is not None else x
    y_train = None if y is None else y[train_idx]

    # 1. Soft labels over the whole transfer set (the cache does not depend on the split).
    started = time.perf_counter()
    _emit(on_progress, "soft_labeling", 0.0, epochs)
    soft: SoftLabels | None = None
    if dist.soft_labels == "cached":
        key = None
        if identity is not None:
            key = cache_key(
                identity["teachers"],
                identity["dataset"],
                sample_shape=sample_shape,
                mean=spec.preprocessing.mean,
                std=spec.preprocessing.std,
                top_k=dist.top_k,
            )

        def on_fraction(done: float) -> None:
            if should_stop():
                raise Cancelled()
            _emit(on_progress, "soft_labeling", done, epochs)

        soft = cached_soft_labels(
            teachers,
            x,
            dev,
            top_k=dist.top_k,
            cache_dir=cache_dir,
            key=key,
            batch_size=inference_batch,
            on_fraction=on_fraction,
        )
    timings["soft_labeling"] = time.perf_counter() - started

    # 2. The student, sized from the teachers' parameters, its input statistics from x_train.
    # The report's teacher is the whole ensemble (what the student replaces); sizing uses
    # its largest member, so the student compresses every single teacher by 1/size_ratio.
    sizes = [t.parameters for t in teachers]
    known = [p for p in sizes if p is not None]
    t_params = sum(known) if len(known) == len(sizes) else None
    largest = max(known) if len(known) == len(sizes) else None
    target, cap = student_target(largest, spec.student.size_ratio, spec.student.max_parameters)
    name, config = size_student(
        spec.student.architecture,
        sample_shape,
        num_classes,
        target=target,
        cap=cap,
        hidden=spec.student.hidden,
    )
    student = init_student(name, config, seed=tr.seed, inputs=x_train)

    started = time.perf_counter()
    with exact_fp32():  # the report's teacher numbers: what anyone gets running it in fp32
        eval_teacher = torch.stack(
            [
                ev.predict(partial(teacher_logits, t, device=dev), eval_x, inference_batch)
                for t in teachers
            ]
        )
    eval_time = time.perf_counter() - started
    p_eval = ev.teacher_probs(eval_teacher)

    # Strided rather than the first rows: an eval set may come sorted by class.
    stride = -(-len(eval_x) // PROGRESS_EVAL_ROWS)
    progress_x, progress_p = eval_x[::stride].contiguous(), p_eval[::stride]

    def on_epoch(epoch: int, model: nn.Module) -> None:
        logits = ev.predict(lambda xb: model(xb.to(dev)), progress_x, inference_batch)
        metrics = {"train_loss": last["loss"], "eval_agreement": ev.agreement(progress_p, logits)}
        _emit(
            on_progress,
            "training",
            (epoch + 1) / epochs,
            epochs,
            epoch=epoch + 1,
            step=last["step"],
            metrics=metrics,
        )

    last: dict[str, Any] = {"loss": None, "step": 0, "emitted": -math.inf}

    def on_step(event: dict[str, Any]) -> None:
        last.update(loss=event["loss"], step=event["step"])
        now = time.monotonic()
        if now - last["emitted"] < STEP_EVENTS_EVERY_S and event["step"] < event["steps"]:
            return
        last["emitted"] = now
        _emit(
            on_progress,
            "training",
            event["step"] / event["steps"],
            epochs,
            epoch=event["epoch"] + 1,
            step=event["step"],
            metrics={"train_loss": event["loss"], "learning_rate": event["lr"]},
        )

    temperature = dist.temperature
    if soft is not None and len(train_idx) * num_classes * 4 <= PRECOMPUTED_PROBS_BYTES:
        # The softened targets of the whole training split, once: per step only a gather.
        # Chunks of K × rows × C fp32 temporaries stay near PRECOMPUTE_CHUNK_BYTES each.
        chunk = max(1, PRECOMPUTE_CHUNK_BYTES // (len(teachers) * num_classes * 4))
        probs = torch.cat(
            [
                soft_targets(soft.batch(train_idx[i : i + chunk]), temperature)
                for i in range(0, len(train_idx), chunk)
            ]
        ).to(dev)

        def targets(idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
            return probs[idx.to(probs.device)]
    elif soft is not None:
        cached = soft

        def targets(idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
            logits = cached.batch(train_idx[idx]).to(dev, non_blocking=True)
            return soft_targets(logits, temperature)
    else:

        def targets(idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
            logits = torch.stack([teacher_logits(t, xb, dev, online=True) for t in teachers])
            return soft_targets(logits, temperature)

    cfg = TrainConfig(
        epochs=epochs,
        batch_size=tr.batch_size,
        learning_rate=tr.learning_rate,
        weight_decay=tr.weight_decay,
        warmup_fraction=tr.warmup_fraction,
        temperature=dist.temperature,
        alpha=dist.alpha,
        seed=tr.seed,
        checkpoint_every=checkpoint_every,
        checkpoint_every_s=checkpoint_every_s,
    )
    fingerprint = _fingerprint(spec, identity, name, config, x, split)
    result = train(
        student,
        x_train,
        y_train,
        targets,
        cfg,
        device=dev,
        workdir=workdir / "checkpoints",
        fingerprint=fingerprint,
        on_step=on_step,
        on_epoch=on_epoch,
        should_stop=should_stop,
    )
    timings["training"] = result.seconds
    if should_stop():
        raise Cancelled()

    # 3. Time the teacher (its eval logits were computed before training, for progress).
    started = time.perf_counter()
    _emit(on_progress, "evaluating", 0.0, epochs, epoch=epochs, step=result.steps)
    student = student.to(dev).eval()
    sample = eval_x[: ev_rows(len(eval_x))]
    # Inputs already on the device for torch runtimes: the timing is the model, not a copy.
    on_host = any(t.format == "onnx" for t in teachers)
    teacher_speed = measure_speed(
        lambda xb: [teacher_logits(t, xb, dev, online=True) for t in teachers],
        sample if on_host else sample.to(dev),
        dev,
    )
    eval_time += time.perf_counter() - started

    # 4. Export, check each file against the PyTorch student, then evaluate and time the
    #    files themselves: the report's student numbers are the downloaded files' numbers.
    started = time.perf_counter()
    _emit(on_progress, "exporting", 0.0, epochs, epoch=epochs, step=result.steps)
    student = student.cpu()
    files = export_student(student, name, config, sample, workdir / "export", spec.export_formats)
    export_diffs = verify_exports(student, files, sample)
    published: dict[str, Path] = {k: v for k, v in files.items() if k in spec.export_formats}
    timings["exporting"] = time.perf_counter() - started
    if should_stop():
        raise Cancelled()

    started = time.perf_counter()
    by_format = {}
    for fmt in METRICS_PREFERENCE:
        if fmt in files:
            logits = ev.predict(runtime_for(fmt, files[fmt]), eval_x, inference_batch)
            by_format[fmt] = ev.eval_metrics(eval_teacher, logits, eval_y)
    source = next(f for f in METRICS_PREFERENCE if f in by_format)
    metrics = by_format[source]
    student_fn, runtime = _student_runtime(teachers, files, student, dev)
    student_speed = measure_speed(
        student_fn, sample if runtime.endswith("cpu") else sample.to(dev), dev
    )
    timings["evaluating"] = eval_time + time.perf_counter() - started

    runtimes = {"onnxruntime-cpu" if t.format == "onnx" else f"torch-{dev.type}" for t in teachers}
    teacher_runtime = "+".join(sorted(runtimes))
    s_params = count_parameters(student)
    report = build_report(
        teacher=model_section(t_params, teacher_speed, teacher_runtime),
        student=model_section(s_params, student_speed, runtime, published),
        metrics=metrics,
        device=dev,
        soft_labels=dist.soft_labels,
        timings=timings,
        extra={
            "metrics_source": source,
            "metrics_by_format": by_format,
            "export_max_abs_diff": export_diffs,
            # Rebuilds the student from the registry (also in the safetensors metadata).
            "student_architecture": config_to_dict(name, config),
            "student_target_parameters": round(target),
            "teachers": len(teachers),
            "teacher_parameters_each": sizes,
            "eval_split": {"source": "eval_dataset"} if split is None else split.describe(),
            "train_samples": len(x_train),
            "steps": result.steps,
            "final_train_loss": result.final_loss,
            "temperature": dist.temperature,
            "alpha": dist.alpha,
            "seed": tr.seed,
        },
    )
    _emit(on_progress, "exporting", 1.0, epochs, epoch=epochs, step=result.steps, metrics=metrics)
    return DistillResult(files=published, report=report, metrics=metrics)


def ev_rows(n: int) -> int:
    """Rows of real eval data used for export checks and speed: up to 256."""
    return min(n, 256)


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


def _fingerprint(
    spec: JobSpec,
    identity: dict[str, Any] | None,
    name: str,
    config: Any,
    x: torch.Tensor,
    split: Any,
) -> str:
    """What a checkpoint must match to be resumed: the job's inputs and the student."""
    blob = json.dumps(
        {
            "spec": spec.model_dump(mode="json", exclude={"export_formats"}),
            "identity": identity,
            "student": config_to_dict(name, config),
            "transfer_shape": list(x.shape),
            "split": None if split is None else split.describe(0)["indices_sha256"],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()
