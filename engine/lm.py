"""Language-model teachers, distilled token by token.

A teacher with ``task == "language_model"`` returns next-token logits ``[N, L, V]``. The
chain is the engine's (``stages.py``) with three parts of its own:

- soft labels per token: the teacher's top ``distillation.top_k`` logits (64 when unset)
  at every position, fp16, and one ``rest_logit`` for the other ``V − k`` ids, stored in
  the soft-label file of ``soft_labels.py`` with the N × L positions as its rows
  (``[1, N·L, k]``), so it is streamed batch by batch and cached like every soft label.
  Positions where ``attention_mask`` is 0 are stored as zeros and never taught;
- the objective (``lm_losses.py``): ``kd``, ``reverse_kl`` or ``jsd`` on the top-k support
  plus a rest bucket, masked over the real tokens, and next-token cross-entropy on the data
  as the hard term (weight ``alpha``);
- evaluation: one pass over the eval rows runs the teacher once a batch and every exported
  file of the student beside it; perplexities, next-token agreement and KL a token are
  sums over the batch, so memory holds a batch of logits, never ``[N, L, V]``.

Memory is O(batch): every batch of logits is at most ``LOGITS_BYTES`` of fp32.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.atomic import commit_file
from core.contracts import Outcome, soft_labels_file
from core.errors import ErrorCode
from core.spec import LM_DEFAULT_TOP_K
from engine.device import autocast, exact_fp32
from engine.errors import UserError
from engine.export import VARIANTS, runtime_for
from engine.lm_losses import next_token_nll, sequence_loss
from engine.report import measure_pair
from engine.rows import Rows
from engine.soft_labels import (
    FILE_VERSION,
    SoftLabels,
    TeacherLike,
    cache_key,
    create_mapped,
    load_soft_labels,
    teacher_logits,
)
from engine.stages import (
    METRICS_PREFERENCE,
    TOKEN_THROUGHPUT_BATCH,
    Context,
    Evaluated,
    Exported,
    Splits,
    Student,
    _fingerprint,
    _student_runtime,
    check_inputs,
    export_check_stage,
    export_stage,
    measure_variants,
    relay_train_event,
    report_stage,
    split_stage,
    student_stage,
    train_config,
)
from engine.tokens import ids_index, mask_index
from engine.trainer import TrainResult, train

LOGITS_BYTES = 64 << 20  # fp32 logits of one inference batch: [b, L, V] × 4 bytes at most
SAMPLE_ROWS = 256  # rows of eval data for the export checks and the timings, at most
PROGRESS_ROWS = 256  # eval rows whose next-token agreement is the per-epoch progress
LAYOUT_VERSION = "lm-tokens-1"  # the file's rows are (sequence, position) pairs


def is_language_model(teachers: Sequence[TeacherLike]) -> bool:
    return getattr(teachers[0], "task", "classification") == "language_model"


def rows_per_batch(length: int, vocab: int, cap: int = 1 << 30) -> int:
    """Sequences a batch so that its logits stay within ``LOGITS_BYTES``."""
    return max(1, min(cap, LOGITS_BYTES // max(1, 4 * length * vocab)))


def ids_and_mask(x: torch.Tensor, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The token ids ``[N, L]`` (int64) and the real-token mask (bool) of a stacked batch;
    without a mask input, every nonzero id is real (as the students read it)."""
    ids = x[:, ids_index(names)].long()
    at = mask_index(names)
    mask = ids != 0 if at is None else x[:, at] != 0
    return ids, mask


def _names(teacher: TeacherLike) -> list[str]:
    return [t.name for t in getattr(teacher, "token_inputs", None) or []]


def effective_top_k(top_k: int | None, vocab: int) -> int:
    return min(vocab, LM_DEFAULT_TOP_K if top_k is None else top_k)


# --- soft labels per token ------------------------------------------------------------------


def topk_of(z: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(values, ids, rest_logit)`` of scores ``[..., V]``: the ``keep`` largest and the log
    of the mean ``exp`` of the others (None when ``keep`` is the whole vocabulary)."""
    vocab = z.shape[-1]
    vals, idx = z.topk(keep, dim=-1)
    if keep >= vocab:
        return vals, idx, None
    rest = z.scatter(-1, idx, float("-inf")).logsumexp(-1) - math.log(vocab - keep)
    return vals, idx, rest


def lm_soft_label_stage(ctx: Context, transfer: Rows) -> SoftLabels | None:
    """The teacher's top-k logits at every position of the transfer set, from the cache
    when present (None in online mode)."""
    started = time.perf_counter()
    ctx.progress.emit("soft_labeling", 0.0)
    if ctx.spec.soft_label_mode != "cached":
        ctx.timings["soft_labeling"] = time.perf_counter() - started
        return None
    teacher = ctx.teachers[0]
    vocab, length = teacher.num_classes, int(transfer.sample_shape[-1])
    keep = effective_top_k(ctx.spec.distillation.top_k, vocab)
    key = None
    if ctx.identity is not None and ctx.cache_dir is not None:
        base = cache_key(
            ctx.identity["teachers"],
            ctx.identity["dataset"],
            sample_shape=transfer.sample_shape,
            mean=None,
            std=None,
            top_k=keep,
        )
        key = hashlib.sha256(f"{base}:{LAYOUT_VERSION}".encode()).hexdigest()
    path = ctx.workdir / "soft-labels.safetensors"
    if key is not None and ctx.cache_dir is not None:
        path = soft_labels_file(ctx.cache_dir, key)
    n = transfer.num_samples
    stored = None if key is None else load_soft_labels(path, key, n * length)
    if stored is None:
        stored = _compute(ctx, transfer, path, key, keep)
    else:
        ctx.progress.emit("soft_labeling", 1.0)
    ctx.timings["soft_labeling"] = time.perf_counter() - started
    if key is not None:
        ctx.on_event({"event": "soft_labels", "key": key})
    return stored


def _compute(ctx: Context, transfer: Rows, path: Any, key: str | None, keep: int) -> SoftLabels:
    teacher = ctx.teachers[0]
    names = _names(teacher)
    vocab, length, n = teacher.num_classes, int(transfer.sample_shape[-1]), transfer.num_samples
    layout: dict[str, tuple[str, list[int]]] = {
        "topk_indices": ("I64", [1, n * length, keep]),
        "topk_logits": ("F16", [1, n * length, keep]),
    }
    if keep < vocab:
        layout["rest_logit"] = ("F16", [1, n * length])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = {"key": key or "", "file_version": FILE_VERSION, "num_classes": str(vocab)}
    labels = SoftLabels(vocab, **create_mapped(tmp, layout, meta))
    batch = rows_per_batch(length, vocab)
    for start in range(0, n, batch):
        ctx.stop_point()
        stop = min(n, start + batch)
        xb = transfer.read(np.arange(start, stop, dtype=np.int64))
        _, mask = ids_and_mask(xb, names)
        with exact_fp32():
            z = teacher_logits(teacher, xb, ctx.device).cpu()
        z = z.masked_fill(~mask.unsqueeze(-1), 0.0)  # padding: zeros, never taught
        vals, idx, rest = topk_of(z.reshape(-1, vocab), keep)
        rows = slice(start * length, stop * length)
        labels.topk_logits[0, rows] = vals.half()  # type: ignore[index]
        labels.topk_indices[0, rows] = idx  # type: ignore[index]
        if rest is not None:
            labels.rest_logit[0, rows] = rest.half()  # type: ignore[index]
        ctx.progress.emit("soft_labeling", stop / n)
    labels.mapped.flush()
    commit_file(tmp, path)
    return labels


# --- the objective ------------------------------------------------------------------------


@dataclass
class LMObjective:
    """The trainer's objective for a language model (``trainer.Objective``)."""

    soft: SoftLabels | None  # None: the teacher runs online on every batch
    teachers: Sequence[TeacherLike]
    index: torch.Tensor  # training row -> transfer row (the soft labels' sequence)
    names: list[str]
    keep: int
    loss: str
    temperature: float
    alpha: float
    beta: float
    device: torch.device

    def targets(
        self, idx: torch.Tensor, xb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(top-k logits, their ids, rest_logit)`` of the batch, ``[b, L, k]`` on device."""
        b, length = xb.shape[0], xb.shape[-1]
        if self.soft is None:
            z = teacher_logits(self.teachers[0], xb, self.device, online=True)
            return topk_of(z.float(), self.keep)
        rows = self.index[idx.cpu()]
        flat = (rows[:, None] * length + torch.arange(length)).reshape(-1)
        assert self.soft.topk_logits is not None and self.soft.topk_indices is not None
        vals = self.soft.topk_logits[0, flat].float().reshape(b, length, -1)
        ids = self.soft.topk_indices[0, flat].reshape(b, length, -1)
        rest = None
        if self.soft.rest_logit is not None:
            rest = self.soft.rest_logit[0, flat].float().reshape(b, length).to(self.device)
        return vals.to(self.device), ids.to(self.device), rest

    def __call__(
        self, model: nn.Module, idx: torch.Tensor, xb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        vals, top_ids, rest = self.targets(idx, xb)
        ids, mask = ids_and_mask(xb, self.names)
        with autocast(self.device):
            logits = model(xb)
        return sequence_loss(
            logits,
            ids,
            mask,
            vals,
            top_ids,
            rest,
            loss=self.loss,
            temperature=self.temperature,
            alpha=self.alpha,
            beta=self.beta,
        )


def _train(ctx: Context, student: Student, splits: Splits, soft: SoftLabels | None) -> TrainResult:
    dist = ctx.spec.distillation
    teacher = ctx.teachers[0]
    names = _names(teacher)
    objective = LMObjective(
        soft,
        ctx.teachers,
        splits.train_index,
        names,
        effective_top_k(dist.top_k, teacher.num_classes),
        dist.loss,
        dist.temperature,
        dist.alpha,
        dist.beta,
        ctx.device,
    )
    # Progress: next-token agreement on a strided subset of the eval rows.
    n = splits.eval.num_samples
    picked = np.arange(0, n, -(-n // PROGRESS_ROWS), dtype=np.int64)
    progress_x = splits.eval.read(picked).contiguous()
    _, progress_mask = ids_and_mask(progress_x, names)
    progress_batch = rows_per_batch(progress_x.shape[-1], teacher.num_classes)
    with exact_fp32():
        top = torch.cat(
            [
                teacher_logits(teacher, part, ctx.device).argmax(-1).cpu()
                for part in torch.split(progress_x, progress_batch)
            ]
        )

    def on_epoch(epoch: int, model: nn.Module) -> dict[str, Any]:
        with torch.inference_mode():
            got = torch.cat(
                [
                    model(part.to(ctx.device)).argmax(-1).cpu()
                    for part in torch.split(progress_x, progress_batch)
                ]
            )
        same = (got == top) & progress_mask
        return {"eval_agreement": float(same.sum()) / max(1, int(progress_mask.sum()))}

    result = train(
        student.module,
        splits.train,
        None,
        lambda idx, xb: xb,  # unused: the objective reads the targets itself
        train_config(ctx),
        device=ctx.device,
        workdir=ctx.workdir / "checkpoints",
        fingerprint=_fingerprint(ctx, student, splits) + f":{dist.beta}:{LAYOUT_VERSION}",
        on_step=ctx.progress.step,
        on_epoch=on_epoch,
        should_stop=ctx.should_stop,
        on_event=partial(relay_train_event, ctx),
        objective=objective,
    )
    ctx.timings["training"] = result.seconds
    ctx.stop_point()
    return result


# --- evaluation -----------------------------------------------------------------------------


class Sums:
    """Running sums over real eval tokens for one model against the teacher."""

    def __init__(self) -> None:
        self.nll = 0.0  # −log q(next id), over the predicted positions
        self.correct = 0  # next-token accuracy on the data
        self.agree = 0  # argmax equal to the teacher's, over the real positions
        self.agree5 = 0  # the teacher's argmax in the top 5
        self.kl = 0.0  # KL(teacher ‖ model) at T = 1, over the real positions

    def add(
        self,
        logits: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        teacher: torch.Tensor | None,
    ) -> None:
        nll, valid = next_token_nll(logits.double(), ids, mask)
        self.nll += float(nll[valid].sum())
        pred = logits[:, :-1].argmax(-1)
        self.correct += int(((pred == ids[:, 1:]) & valid).sum())
        if teacher is None:
            return
        top_t = teacher.argmax(-1, keepdim=True)
        self.agree += int(((logits.argmax(-1, keepdim=True) == top_t).squeeze(-1) & mask).sum())
        k = min(5, logits.shape[-1])
        in5 = (logits.topk(k, dim=-1).indices == top_t).any(-1)
        self.agree5 += int((in5 & mask).sum())
        log_p = F.log_softmax(teacher.double(), dim=-1)
        log_q = F.log_softmax(logits.double(), dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        self.kl += float(kl[mask].sum())


def lm_metrics(sums: Sums, teacher: Sums, real: int, predicted: int, rows: int) -> dict[str, Any]:
    """The report's figures of one model (and the classification names they stand for)."""
    agreement = sums.agree / max(1, real)
    return {
        "agreement_top1": agreement,
        "agreement_top5": sums.agree5 / max(1, real),
        "kl_divergence": sums.kl / max(1, real),
        "teacher_accuracy": teacher.correct / max(1, predicted),
        "student_accuracy": sums.correct / max(1, predicted),
        "eval_samples": rows,
        "next_token_agreement": agreement,
        "kl_per_token": sums.kl / max(1, real),
        "teacher_perplexity": math.exp(teacher.nll / max(1, predicted)),
        "student_perplexity": math.exp(sums.nll / max(1, predicted)),
        "eval_tokens": real,
        "eval_predicted_tokens": predicted,
    }


def evaluate_files(
    teacher_fn: Callable[[torch.Tensor], torch.Tensor],
    students: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    rows: Rows,
    names: Sequence[str],
    batch: int,
) -> dict[str, dict[str, Any]]:
    """Each student (by format) against the teacher over every eval row, in one pass: the
    teacher runs once a batch."""
    sums = {fmt: Sums() for fmt in students}
    reference = Sums()
    real = predicted = 0
    n = rows.num_samples
    with torch.inference_mode():
        for start in range(0, n, batch):
            xb = rows.read(np.arange(start, min(n, start + batch), dtype=np.int64))
            ids, mask = ids_and_mask(xb, names)
            real += int(mask.sum())
            predicted += int((mask[:, 1:] & mask[:, :-1]).sum())
            with exact_fp32():
                t = teacher_fn(xb).float().cpu()
            reference.add(t, ids, mask, None)
            for fmt, fn in students.items():
                sums[fmt].add(fn(xb).float().cpu(), ids, mask, t)
    return {fmt: lm_metrics(s, reference, real, predicted, n) for fmt, s in sums.items()}


def _evaluate(
    ctx: Context,
    exported: Exported,
    eval_rows: Rows,
    module: nn.Module,
    sample: torch.Tensor,
    batch: int,
) -> Evaluated:
    started = time.perf_counter()
    teacher = ctx.teachers[0]
    files = exported.files
    formats = [f for f in (*METRICS_PREFERENCE, *VARIANTS) if f in files]
    by_format = evaluate_files(
        lambda xb: teacher_logits(teacher, xb, ctx.device),
        {fmt: runtime_for(fmt, files[fmt]) for fmt in formats},
        eval_rows,
        _names(teacher),
        batch,
    )
    source = next(f for f in METRICS_PREFERENCE if f in by_format)
    student_fn, runtime = _student_runtime(ctx.teachers, files, module, ctx.device)
    on_host = teacher.format == "onnx"
    teacher_speed, speed, speedup = measure_pair(
        lambda xb: teacher_logits(teacher, xb, ctx.device, online=True),
        sample if on_host else sample.to(ctx.device),
        student_fn,
        sample if runtime.endswith("cpu") else sample.to(ctx.device),
        ctx.device,
        clock="wall",
        batch=min(TOKEN_THROUGHPUT_BATCH, batch),
    )
    speedup["threads"] = torch.get_num_threads() if ctx.device.type == "cpu" else None
    variants = measure_variants(ctx, exported, by_format, sample)
    ctx.timings["evaluating"] = time.perf_counter() - started
    return Evaluated(
        by_format[source], by_format, source, speed, runtime, teacher_speed, speedup, variants
    )


def token_speed(speed: dict[str, float], length: int) -> dict[str, float]:
    """Per-token figures from a model's speed at sequences of ``length`` tokens: a forward
    pass over the whole sequence at batch 1, divided by its tokens; tokens a second at the
    throughput batch."""
    return {
        "latency_ms_per_token": speed["latency_ms_batch1"] / length,
        "tokens_per_s": speed["throughput_per_s"] * length,
    }


# --- the chain ------------------------------------------------------------------------------


def check_language_model_job(ctx: Context) -> None:
    spec = ctx.spec
    if len(ctx.teachers) != 1:
        raise UserError(ErrorCode.BAD_SPEC, "teacher_ids: language models distil one teacher")
    if spec.sweep is not None or spec.baseline:
        raise UserError(ErrorCode.BAD_SPEC, "sweep, baseline: not offered for language models")
    if spec.distillation.loss == "kd_jacobian" or spec.augmentation.active:
        raise UserError(
            ErrorCode.BAD_SPEC, "distillation.loss: kd, reverse_kl or jsd for language models"
        )


def run_lm_stages(ctx: Context, transfer: Rows, held: Rows | None) -> Outcome:
    """The engine's chain for a language model: its files, report and metrics."""
    check_language_model_job(ctx)
    check_inputs(ctx.teachers, transfer, "dataset")
    if held is not None:
        check_inputs(ctx.teachers, held, "eval dataset")
    splits = split_stage(transfer, held, ctx.spec.training)
    soft = lm_soft_label_stage(ctx, transfer)
    student = student_stage(ctx, splits.train)
    length, vocab = int(transfer.sample_shape[-1]), ctx.teachers[0].num_classes
    batch = rows_per_batch(length, vocab)
    count = max(2, min(splits.eval.num_samples, SAMPLE_ROWS, batch))
    sample = splits.eval.read(np.arange(min(splits.eval.num_samples, count)))
    export_check_stage(ctx, student, sample)
    trained = _train(ctx, student, splits, soft)
    ctx.progress.emit("evaluating", 0.0, epoch=ctx.spec.training.epochs, step=trained.steps)
    exported = export_stage(ctx, student, sample, trained.steps, splits.train)
    evaluated = _evaluate(ctx, exported, splits.eval, student.module, sample, batch)
    report = report_stage(ctx, student, splits, trained, exported, evaluated)
    report = report.model_copy(
        update={
            "teacher": report.teacher.model_copy(
                update=token_speed(evaluated.teacher_speed, length)
            ),
            "student": report.student.model_copy(update=token_speed(evaluated.speed, length)),
            "task": "language_model",
            "top_k": effective_top_k(ctx.spec.distillation.top_k, vocab),
            "beta": ctx.spec.distillation.beta if ctx.spec.distillation.loss == "jsd" else None,
        }
    )
    metrics = {**evaluated.metrics, "train_loss": trained.final_loss}
    ctx.progress.emit(
        "exporting", 1.0, epoch=ctx.spec.training.epochs, step=trained.steps, metrics=metrics
    )
    return Outcome(files=exported.published, report=report, metrics=metrics)
