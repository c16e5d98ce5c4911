"""The engine's entry point: teacher files + transfer set + spec → student files + report.

A chain of stages (``stages.py``), each a short function with typed inputs and outputs:

    check → split → soft labels → student → teacher on the eval rows
          → export the untrained student and check it → train
          → time the teacher → export and verify → evaluate the files → report

Progress reports them as the job's stages: soft_labeling → training → evaluating →
exporting. ``run_distillation`` opens the files through the guarded loaders as ``Rows``
(memory-mapped or decoded per batch: memory is O(batch), not O(N)); ``distill`` runs the
chain on loaded teachers and tensors or rows (tests and benchmarks call it directly with
tiny in-memory teachers).

Every number in the report comes from what a user downloads: agreement, KL and accuracy
are recomputed by running the exported student file (ONNX when exported, else .pt2, else
the safetensors rebuild), and each exported file is first checked against the PyTorch
student.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.contracts import (
    CHECKPOINT_EVERY_SECONDS,
    CHECKPOINT_EVERY_STEPS,
    EngineLimits,
    FileRef,
    Outcome,
)
from core.errors import ErrorCode
from core.spec import JobSpec
from engine.device import inference_batch, resolve_device, set_threads
from engine.errors import UserError
from engine.progress import Progress, Reporter
from engine.rows import ArrayRows, Rows
from engine.soft_labels import TeacherLike
from engine.stages import (
    Context,
    check_inputs,
    evaluate_stage,
    export_check_stage,
    export_stage,
    report_stage,
    soft_label_stage,
    split_stage,
    student_stage,
    teacher_eval_stage,
    time_teacher_stage,
    train_stage,
)
from engine.sweep import run_sweep
from engine.targets import make_targets
from engine.token_data import TokenRows

SAMPLE_ROWS = 256  # rows of real eval data for the export checks and the speed timings


def run_distillation(
    teachers: Sequence[FileRef],
    transfer: FileRef,
    eval_set: FileRef | None,
    spec: JobSpec,
    *,
    workdir: Path,
    cache_dir: Path,
    on_progress: Progress = lambda ev: None,
    on_event: Progress = lambda ev: None,
    should_stop: Callable[[], bool] = lambda: False,
    device: str | None = None,
    checkpoint_every: int | None = None,
    checkpoint_every_seconds: float | None = None,
    allow_torchscript: bool = False,
    threads: int | None = None,
    tokenizer: FileRef | None = None,
    limits: EngineLimits | None = None,
) -> Outcome:
    """Distil ``teachers`` into a student; re-calling with the same ``workdir`` resumes.
    Returns the ``Outcome`` the child sends the worker: the student's files, the ``Report``
    and the job's final metrics (a sweep's: the chosen candidate's, and every candidate's
    files by index).
    ``tokenizer``: the first teacher's tokenizer.json, for text datasets; ``limits``: the
    operator's caps on what the uploads may unpack to (None: the defaults).

    Raises ``UserError`` for a teacher, dataset or spec that cannot work and ``Stopped``
    when ``should_stop()`` turns true (after a checkpoint).
    """
    from engine.data import DataLimits, open_dataset
    from engine.guard import ArchiveLimits
    from engine.teachers import load_teacher

    dev = resolve_device(device)
    set_threads(threads)
    loaded = [
        load_teacher(
            s.path,
            s.format,
            allow_torchscript=allow_torchscript,
            device=dev.type,
            output_name=s.output_name,
            output_kind=s.output_kind,
            limits=ArchiveLimits.for_teachers(limits),
        )
        for s in teachers
    ]
    if tokenizer is None and loaded[0].tokenizer_path is not None:  # a model folder's own
        tokenizer = FileRef.of(loaded[0].tokenizer_path, "tokenizer")
    dims = loaded[0].input_shape[1:]
    # Images are resized to the teacher's size; with a dynamic dimension, left as they are.
    shape = None if any(d is None for d in dims) else [int(d) for d in dims if d is not None]
    tokens = loaded[0].token_inputs
    prep = partial(
        open_dataset,
        sample_shape=shape,
        mean=spec.preprocessing.mean,
        std=spec.preprocessing.std,
        token_inputs=None if tokens is None else [t.name for t in tokens],
        limits=DataLimits() if limits is None else DataLimits.of(limits),
    )
    from engine.text_data import is_text

    texts = {s.path: is_text(s.path, s.format) for s in (transfer, eval_set) if s is not None}
    if any(texts.values()):
        prep = partial(_open_text, prep, loaded[0], tokenizer, texts, cache_dir)
    rows = prep(transfer.path, transfer.format, scratch=workdir / "data/transfer")
    held = None
    if eval_set is not None:
        held = prep(eval_set.path, eval_set.format, scratch=workdir / "data/eval")
    limit = loaded[0].max_positions
    for field_name, opened in (("dataset_id", rows), ("eval_dataset_id", held)):
        if tokens is not None and limit and opened is not None:
            length = opened.sample_shape[-1]
            if length > limit:
                raise UserError(
                    ErrorCode.BAD_SPEC,
                    f"{field_name}: sequences of {length} tokens; the teacher's position "
                    f"embeddings end at {limit}",
                )
    identity = {
        # The scores depend on the output used and its kind, not only on the file.
        "teachers": [
            f"{s.sha256}:{t.output_name}:{t.output_kind}"
            for s, t in zip(teachers, loaded, strict=True)
        ],
        # Text is tokenized with the tokenizer: the soft labels depend on both.
        "dataset": transfer.sha256
        if not texts.get(transfer.path) or tokenizer is None
        else f"{transfer.sha256}:{tokenizer.sha256}",
        "eval_dataset": None if eval_set is None else eval_set.sha256,
    }
    return distill(
        loaded,
        rows,
        None,
        held,
        None,
        spec,
        workdir=workdir,
        cache_dir=cache_dir,
        identity=identity,
        on_progress=on_progress,
        on_event=on_event,
        should_stop=should_stop,
        device=dev,
        checkpoint_every=checkpoint_every,
        checkpoint_every_seconds=checkpoint_every_seconds,
    )


def _open_text(
    prep: Callable[..., Rows],
    teacher: Any,
    tokenizer: FileRef | None,
    texts: dict[str, bool],
    cache_dir: Path,
    path: str,
    fmt: str,
    *,
    scratch: Path,
) -> Rows:
    """A text dataset, tokenized with the teacher's tokenizer once per (dataset, tokenizer,
    max length) into the cache folder, where the soft labels are: a later job on the same
    teacher and data maps the same arrays; other datasets as ``prep`` opens them."""
    if not texts.get(path):
        return prep(path, fmt, scratch=scratch)
    from engine.text_data import cache_name, max_length_for, text_rows

    if tokenizer is None or teacher.token_inputs is None:
        raise UserError(
            ErrorCode.BAD_SPEC,
            "dataset_id: a text dataset needs a teacher with token inputs and a tokenizer",
        )
    length = max_length_for(
        tokenizer.path, teacher.token_inputs[0].length, getattr(teacher, "max_positions", None)
    )
    with open(path, "rb") as file:  # streamed: O(1) memory at any size
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    folder = cache_dir / cache_name(digest, tokenizer.sha256, length)
    names = [spec.name for spec in teacher.token_inputs]
    return text_rows(path, tokenizer.path, names=names, max_length=length, folder=folder, fmt=fmt)


def distill(
    teachers: Sequence[TeacherLike],
    x: torch.Tensor | Rows,
    y: torch.Tensor | None,
    eval_x: torch.Tensor | Rows | None,
    eval_y: torch.Tensor | None,
    spec: JobSpec,
    *,
    workdir: Path,
    cache_dir: Path | None,
    identity: dict[str, Any] | None = None,
    on_progress: Progress = lambda ev: None,
    on_event: Progress = lambda ev: None,
    should_stop: Callable[[], bool] = lambda: False,
    device: torch.device | None = None,
    checkpoint_every: int | None = None,
    checkpoint_every_seconds: float | None = None,
) -> Outcome:
    """The engine on loaded teachers and tensors (``y``/``eval_y`` their labels) or rows
    (which carry their own). ``identity`` (teacher and dataset sha256s) keys the soft-label
    cache; without it nothing is reused.
    The checkpoint cadences default to the settings' defaults."""
    transfer = _as_rows(x, y)
    held = None if eval_x is None else _as_rows(eval_x, eval_y)
    ctx = Context(
        teachers,
        spec,
        device or resolve_device(),
        workdir,
        cache_dir,
        identity,
        Reporter(on_progress, spec.training.epochs),
        should_stop,
        CHECKPOINT_EVERY_STEPS if checkpoint_every is None else checkpoint_every,
        on_event=on_event,
        checkpoint_every_seconds=(
            CHECKPOINT_EVERY_SECONDS
            if checkpoint_every_seconds is None
            else checkpoint_every_seconds
        ),
    )
    tokens = isinstance(transfer, TokenRows)
    ctx.inference_batch = inference_batch(transfer.sample_shape, ctx.device, tokens=tokens)
    return run_stages(ctx, transfer, held)


def run_stages(ctx: Context, transfer: Rows, held: Rows | None) -> Outcome:
    from engine.lm import is_language_model, run_lm_stages

    if is_language_model(ctx.teachers):  # token by token: its own chain (lm.py)
        return run_lm_stages(ctx, transfer, held)
    check_inputs(ctx.teachers, transfer, "dataset")
    if held is not None:
        check_inputs(ctx.teachers, held, "eval dataset")
    splits = split_stage(transfer, held, ctx.spec.training)
    soft = soft_label_stage(ctx, transfer)
    if ctx.spec.sweep is not None or ctx.spec.baseline:
        return run_sweep(ctx, splits, soft, SAMPLE_ROWS)
    student = student_stage(ctx, splits.train)
    reference = teacher_eval_stage(ctx, splits.eval)
    sample = splits.eval.read(np.arange(min(splits.eval.num_samples, SAMPLE_ROWS)))
    export_check_stage(ctx, student, sample)
    targets = make_targets(
        soft,
        teachers=ctx.teachers,
        index=splits.train_index,
        temperature=ctx.spec.distillation.temperature,
        device=ctx.device,
    )
    trained = train_stage(ctx, student, splits, targets, reference)
    teacher = time_teacher_stage(ctx, sample, reference, trained.steps)
    exported = export_stage(ctx, student, sample, trained.steps, splits.train)
    evaluated = evaluate_stage(
        ctx, exported, reference, splits.eval, student.module, sample, teacher
    )
    report = report_stage(ctx, student, splits, trained, exported, evaluated)
    # The job's final metrics: the evaluation, and the last epoch's loss as /metrics has it.
    metrics = {**evaluated.metrics, "train_loss": trained.final_loss}
    ctx.progress.emit(
        "exporting", 1.0, epoch=ctx.spec.training.epochs, step=trained.steps, metrics=metrics
    )
    return Outcome(files=exported.published, report=report, metrics=metrics)


def _as_rows(x: torch.Tensor | Rows, y: torch.Tensor | None) -> Rows:
    return ArrayRows.of_tensors(x, y) if isinstance(x, torch.Tensor) else x
