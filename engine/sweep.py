"""A sweep (one student per temperature × alpha × size ratio) and the hard-label baseline.

Every candidate learns from the same soft-label pass: the teachers' logits are stored once
(``soft_labels.py``) and each candidate softens them at its own temperature
(``targets.make_targets``). A candidate costs its own training, export and evaluation,
never another teacher pass; the teachers' eval logits and speed are also measured once.

The chosen candidate: the best eval agreement, or the smallest student (fewest parameters)
whose agreement is within ``CHOSEN_WITHIN`` of it; among equal sizes the better agreement,
then the earlier candidate. Its numbers and files are the job's top-level report and
student, so a client that knows nothing of sweeps gets the chosen one. Each candidate also
says whether it is on the Pareto front of cost (parameters, latency) against quality
(agreement, accuracy): the ones worth a look when the chosen one is not what a user needs.

Resume: candidate n works in ``candidates/<n>/`` (its own training checkpoint and exports)
and ends by writing ``result.json`` (its report and files, keyed by everything that decides
them). That file is the commit point: a re-run skips every candidate that has one with a
matching key and resumes the one that was training from its checkpoint.

The baseline is the chosen student's architecture and size trained on the hard labels
alone (``alpha`` = 1: the soft term has weight 0), same epochs, seed and schedule.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

from core.atomic import atomic_write
from core.contracts import Baseline, Candidate, DistillationGain, Outcome, Report
from core.enums import ExportFormat
from core.errors import ErrorCode
from core.spec import JobSpec
from engine.errors import UserError
from engine.progress import STAGE_END, STAGE_START, Progress, Reporter
from engine.soft_labels import SoftLabels
from engine.stages import (
    Context,
    Reference,
    Splits,
    TeacherTimer,
    evaluate_stage,
    export_check_stage,
    export_stage,
    report_stage,
    student_stage,
    teacher_eval_stage,
    time_teacher_stage,
    train_stage,
)
from engine.targets import make_targets

CHOSEN_WITHIN = 0.005  # "within 0.5 point" of the best agreement (a share, not a percent)
BASELINE = "baseline"
RESULT = "result.json"


@dataclass(frozen=True)
class Score:
    agreement: float
    parameters: int


def choose(scores: Sequence[Score]) -> int:
    """The index of the chosen candidate (the rule is in the module docstring)."""
    best = max(s.agreement for s in scores)
    close = [i for i, s in enumerate(scores) if s.agreement >= best - CHOSEN_WITHIN - 1e-12]
    return min(close, key=lambda i: (scores[i].parameters, -scores[i].agreement, i))


# Latencies within this share of each other count as equal on the Pareto front: timings of
# students of one size differ by noise, and noise must not decide what is worth a look.
LATENCY_TOLERANCE = 0.1


def pareto_front(entries: Sequence[Candidate]) -> list[bool]:
    """For each candidate: True when no other is at least as good on every measure (fewer or
    as many parameters, as fast or faster at batch 1, as much or more agreement and accuracy)
    and better on one. Accuracy counts only when every candidate has it (eval labels);
    latencies within ``LATENCY_TOLERANCE`` of each other are equal."""
    with_accuracy = all(e.student_accuracy is not None for e in entries)

    def as_good(q: Candidate, p: Candidate) -> tuple[bool, bool]:
        """(q is at least as good as p everywhere, q is better somewhere)."""
        slack = 1.0 + LATENCY_TOLERANCE
        ql, pl = q.latency_ms_batch1, p.latency_ms_batch1
        pairs: list[tuple[float, float]] = [
            (q.parameters, p.parameters),
            (-q.agreement_top1, -p.agreement_top1),
        ]
        if with_accuracy:  # then no candidate's is None
            pairs.append((-(q.student_accuracy or 0.0), -(p.student_accuracy or 0.0)))
        no_worse = all(a <= b for a, b in pairs) and ql <= pl * slack
        better = any(a < b for a, b in pairs) or ql * slack < pl
        return no_worse, better

    def dominated(p: Candidate) -> bool:
        return any(all(as_good(q, p)) for q in entries if q is not p)

    return [not dominated(p) for p in entries]


def candidate_specs(spec: JobSpec) -> list[JobSpec]:
    """One single-student spec per combination, temperatures outermost, size ratios
    innermost; without a sweep, the spec itself."""
    sweep, dist, student = spec.sweep, spec.distillation, spec.student
    if sweep is None:
        return [spec.model_copy(update={"baseline": False})]
    grid = itertools.product(
        sweep.temperature or [dist.temperature],
        sweep.alpha or [dist.alpha],
        sweep.size_ratio or [student.size_ratio],
    )
    return [
        spec.model_copy(
            update={
                "distillation": dist.model_copy(update={"temperature": t, "alpha": a}),
                "student": student.model_copy(update={"size_ratio": r}),
                "sweep": None,
                "baseline": False,
            }
        )
        for t, a, r in grid
    ]


def baseline_spec(chosen: JobSpec) -> JobSpec:
    dist = chosen.distillation.model_copy(update={"alpha": 1.0})
    return chosen.model_copy(update={"distillation": dist})


@dataclass
class Shared:
    """What every candidate reuses: the split, the stored logits, the teachers' numbers."""

    splits: Splits
    soft: SoftLabels
    reference: Reference
    sample: torch.Tensor
    teacher: TeacherTimer


@dataclass
class Finished:
    report: Report  # the candidate's own full report (as a single-student job's)
    files: dict[ExportFormat, Path]  # the formats the job asked for


class Stored(BaseModel):
    """A candidate's ``result.json``: its report and files (relative to its folder), keyed by
    everything that decides them."""

    key: str
    report: Report
    files: dict[ExportFormat, str]


def _key(ctx: Context, spec: JobSpec, splits: Splits) -> str:
    """What a stored result must match to be reused (like a training checkpoint's)."""
    blob = json.dumps(
        {
            "spec": spec.model_dump(mode="json"),
            "identity": ctx.identity,
            "transfer_shape": [splits.transfer_samples, *splits.train.sample_shape],
            "split": None if splits.split is None else splits.split.describe(0)["indices_sha256"],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def load_finished(folder: Path, key: str) -> Finished | None:
    """The stored result in ``folder`` when it matches ``key`` and its files are there."""
    try:
        stored = Stored.model_validate_json((folder / RESULT).read_bytes())
    except (OSError, ValidationError):
        return None
    files = {fmt: folder / name for fmt, name in stored.files.items()}
    if stored.key != key or not all(p.is_file() for p in files.values()):
        return None
    return Finished(stored.report, files)


def _store(folder: Path, key: str, done: Finished) -> None:
    files = {fmt: str(p.relative_to(folder)) for fmt, p in done.files.items()}
    stored = Stored(key=key, report=done.report, files=files)
    atomic_write(folder / RESULT, stored.model_dump_json().encode())


def _in_slice(on_progress: Progress, index: int, count: int) -> Progress:
    """Candidate ``index`` of ``count`` fills its share of the job's training slice; its own
    evaluating and exporting stay inside it, so the stages and the bar never go back."""
    lo, hi = STAGE_START["training"], STAGE_END["training"]

    def emit(event: dict[str, Any]) -> None:
        done = (event["progress"] - lo) / (hi - lo) if event["stage"] == "training" else 1.0
        done = min(1.0, max(0.0, done))
        on_progress(
            event | {"stage": "training", "progress": lo + (hi - lo) * (index + done) / count}
        )

    return emit


def run_candidate(
    ctx: Context, label: str, spec: JobSpec, shared: Shared, slot: tuple[int, int]
) -> Finished:
    """Train, export and evaluate one student in ``candidates/<label>/``, or reuse its
    stored result. ``slot``: (its place, how many) in the job's progress."""
    folder = ctx.workdir / "candidates" / label
    key = _key(ctx, spec, shared.splits)
    done = load_finished(folder, key)
    if done is not None:
        return done
    ctx.stop_point()
    # Its epochs would collide with the other candidates' in the job's per-epoch history;
    # each candidate's numbers are in the report instead.
    own = replace(
        ctx,
        spec=spec,
        workdir=folder,
        timings={"evaluating": 0.0},
        progress=Reporter(_in_slice(ctx.progress.on_progress, *slot), spec.training.epochs),
        on_event=lambda ev: None,
    )
    student = student_stage(own, shared.splits.train)
    export_check_stage(own, student, shared.sample)
    targets = make_targets(
        shared.soft,
        teachers=ctx.teachers,
        index=shared.splits.train_index,
        temperature=spec.distillation.temperature,
        device=ctx.device,
    )
    trained = train_stage(own, student, shared.splits, targets, shared.reference)
    exported = export_stage(own, student, shared.sample, trained.steps, shared.splits.train)
    evaluated = evaluate_stage(
        own,
        exported,
        shared.reference,
        shared.splits.eval,
        student.module,
        shared.sample,
        shared.teacher,
    )
    # Its timings are its own (``own.timings``): the job's are summed in ``_timings``.
    done = Finished(
        report_stage(own, student, shared.splits, trained, exported, evaluated),
        exported.published,
    )
    _store(folder, key, done)
    return done


def _extra(report: Report, name: str) -> Any:
    """A field of the report that its model does not name (the engine's own)."""
    return (report.model_extra or {}).get(name)


def candidate_entry(index: int, spec: JobSpec, done: Finished) -> Candidate:
    """One line of the report's ``candidates``: its spec values and its measures."""
    report = done.report
    return Candidate.model_validate(
        {
            "index": index,
            "temperature": spec.distillation.temperature,
            "alpha": spec.distillation.alpha,
            "size_ratio": spec.student.size_ratio,
            "parameters": _parameters(report),
            "latency_ms_batch1": report.student.latency_ms_batch1,
            "throughput_per_s": report.student.throughput_per_s,
            "agreement_top1": report.agreement_top1,
            "student_accuracy": report.student_accuracy,
            "kl_divergence": report.kl_divergence,
            "student_architecture": _extra(report, "student_architecture"),
            "training_s": report.timings_s.get("training"),
            "formats": sorted(done.files),
            "variants": report.variants,
        }
    )


def run_sweep(ctx: Context, splits: Splits, soft: SoftLabels | None, sample_rows: int) -> Outcome:
    """Every candidate (and the baseline when asked) from one soft-label pass; the first
    ``sample_rows`` eval rows check the exports and time the models."""
    if soft is None:
        raise UserError(ErrorCode.BAD_SPEC, 'sweep: needs distillation.soft_labels "cached"')
    if ctx.spec.baseline and not splits.train.has_labels:
        raise UserError(ErrorCode.BAD_SPEC, "baseline: the transfer set has no labels")
    shared = _shared(ctx, splits, soft, sample_rows)
    specs = candidate_specs(ctx.spec)
    slots = len(specs) + int(ctx.spec.baseline)
    finished = [
        run_candidate(ctx, str(i), spec, shared, (i, slots)) for i, spec in enumerate(specs)
    ]
    chosen = choose([Score(d.report.agreement_top1, _parameters(d.report)) for d in finished])
    update: dict[str, Any] = {"timings_s": _timings(ctx, finished)}
    if ctx.spec.sweep is not None:
        entries = [
            candidate_entry(i, spec, d)
            for i, (spec, d) in enumerate(zip(specs, finished, strict=True))
        ]
        update["candidates"] = [
            entry.model_copy(update={"pareto": on_front})
            for entry, on_front in zip(entries, pareto_front(entries), strict=True)
        ]
        update["chosen"] = chosen
    if ctx.spec.baseline:
        base = run_candidate(
            ctx, BASELINE, baseline_spec(specs[chosen]), shared, (len(specs), slots)
        )
        update["timings_s"] = _timings(ctx, [*finished, base])
        update["baseline"], update["distillation_gain"] = baseline_sections(
            finished[chosen].report, base.report
        )
    report = finished[chosen].report.model_copy(update=update)
    metrics = _metrics(report)
    epochs = ctx.spec.training.epochs
    ctx.progress.emit("exporting", 1.0, epoch=epochs, metrics=metrics)
    candidates = [d.files for d in finished] if ctx.spec.sweep is not None else []
    return Outcome(
        files=finished[chosen].files, report=report, metrics=metrics, candidates=candidates
    )


def _parameters(report: Report) -> int:
    """A student's parameter count (a student's is always known; a teacher's may not be)."""
    parameters = report.student.parameters
    if parameters is None:
        raise ValueError("a student's report without its parameter count")
    return parameters


def _shared(ctx: Context, splits: Splits, soft: SoftLabels, sample_rows: int) -> Shared:
    reference = teacher_eval_stage(ctx, splits.eval)
    sample = splits.eval.read(np.arange(min(splits.eval.num_samples, sample_rows)))
    # Each candidate times the teacher beside itself; the progress event of setting the timer
    # up would send the job's stage back from "evaluating" to "training", so it goes nowhere.
    quiet = replace(ctx, progress=Reporter(lambda ev: None, ctx.spec.training.epochs))
    teacher = time_teacher_stage(quiet, sample, reference, 0)
    return Shared(splits, soft, reference, sample, teacher)


def _timings(ctx: Context, finished: Sequence[Finished]) -> dict[str, float]:
    """The job's: its one soft-label pass and teacher measurements, plus every candidate's."""
    total = dict(ctx.timings)
    for done in finished:
        for stage, seconds in done.report.timings_s.items():
            total[stage] = total.get(stage, 0.0) + seconds
    return {k: round(v, 3) for k, v in total.items()}


def baseline_sections(distilled: Report, baseline: Report) -> tuple[Baseline, DistillationGain]:
    """``baseline``: the hard-label student's numbers; ``distillation_gain``: the distilled
    student's minus the baseline's (positive: distillation helped)."""

    def gain(a: float | None, b: float | None) -> float | None:  # accuracies: with labels
        return None if a is None or b is None else a - b

    section = Baseline.model_validate(
        {
            "alpha": 1.0,
            "parameters": _parameters(baseline),
            "latency_ms_batch1": baseline.student.latency_ms_batch1,
            "student_architecture": _extra(baseline, "student_architecture"),
            "training_s": baseline.timings_s.get("training"),
            "agreement_top1": baseline.agreement_top1,
            "student_accuracy": baseline.student_accuracy,
            "kl_divergence": baseline.kl_divergence,
        }
    )
    return section, DistillationGain(
        agreement_top1=distilled.agreement_top1 - baseline.agreement_top1,
        student_accuracy=gain(distilled.student_accuracy, baseline.student_accuracy),
        kl_divergence=distilled.kl_divergence - baseline.kl_divergence,
    )


# The job's final metrics of a sweep: the chosen candidate's evaluation.
METRICS = (
    "agreement_top1",
    "agreement_top5",
    "kl_divergence",
    "teacher_accuracy",
    "student_accuracy",
    "eval_samples",
)


def _metrics(report: Report) -> dict[str, Any]:
    return {name: getattr(report, name) for name in METRICS}
