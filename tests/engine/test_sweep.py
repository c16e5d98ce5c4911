"""Sweeps: the chosen-candidate rule, one teacher pass for every candidate, resume, baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from core.contracts import Candidate, Outcome
from core.spec import JobSpec
from engine.engine import distill
from engine.errors import Stopped, UserError
from engine.sweep import Score, Stored, candidate_specs, choose, pareto_front
from tests.engine.helpers import ModuleTeacher, digits_split, fit


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    x, y, xe, ye = digits_split()
    return x[:400], y[:400], xe[:200], ye[:200]


@pytest.fixture(scope="module")
def teacher_module(digits: tuple[torch.Tensor, ...]) -> nn.Module:
    x, y, _, _ = digits
    torch.manual_seed(0)
    return fit(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)), x, y, epochs=10)


class CountingTeacher(ModuleTeacher):
    """Counts the calls that see the whole 400-row transfer set: soft-label passes."""

    passes = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        CountingTeacher.passes += len(x) == 400
        return super().__call__(x)


def spec(**extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {
            "teacher_ids": ["t"],
            "dataset_id": "d",
            "training": {"epochs": 2, "batch_size": 64, "seed": 1},
            "export_formats": ["safetensors"],
            **extra,
        }
    )


def run(
    tmp: Path, teacher: nn.Module, digits: Any, job: JobSpec, labels: bool = False, **kw: Any
) -> Outcome:
    x, y, xe, ye = digits
    return distill(
        [CountingTeacher(teacher, 10, [None, 64])],
        x,
        y if labels else None,
        xe,
        ye,
        job,
        workdir=tmp / "work",
        cache_dir=tmp / "cache",
        identity={"teachers": ["sha-t"], "dataset": "sha-d"},
        **kw,
    )


# --- the chosen rule ---------------------------------------------------------------------------


def test_the_best_agreement_is_chosen_when_nothing_smaller_is_close() -> None:
    scores = [Score(0.90, 100), Score(0.95, 400), Score(0.80, 50)]
    assert choose(scores) == 1


def test_the_smallest_within_half_a_point_of_the_best_is_chosen() -> None:
    scores = [Score(0.950, 400), Score(0.946, 200), Score(0.9451, 100), Score(0.944, 50)]
    assert choose(scores) == 2  # 0.944 is 0.6 point behind: out


def test_equal_sizes_go_to_the_better_agreement_then_the_earlier() -> None:
    assert choose([Score(0.948, 100), Score(0.950, 100), Score(0.950, 400)]) == 1
    assert choose([Score(0.950, 100), Score(0.950, 100)]) == 0


def _entry(params: int, latency: float, agreement: float, accuracy: float | None) -> Candidate:
    return Candidate(
        index=0,
        temperature=4.0,
        alpha=0.1,
        size_ratio=0.1,
        parameters=params,
        latency_ms_batch1=latency,
        agreement_top1=agreement,
        student_accuracy=accuracy,
        kl_divergence=0.0,
    )


def test_the_pareto_front_keeps_every_trade_off_and_drops_the_dominated() -> None:
    entries = [
        _entry(100, 0.10, 0.90, 0.88),  # smallest and fastest
        _entry(400, 0.20, 0.95, 0.93),  # best quality
        _entry(400, 0.25, 0.94, 0.93),  # as big as the one above, slower, worse: dominated
        _entry(200, 0.15, 0.90, 0.88),  # bigger and slower than the first for nothing
        _entry(200, 0.15, 0.92, 0.87),  # better agreement, worse accuracy: a trade-off
    ]
    assert pareto_front(entries) == [True, True, False, False, True]
    # Two identical candidates dominate neither each other: both stay.
    assert pareto_front([_entry(1, 1.0, 0.5, 0.5)] * 2) == [True, True]


def test_latency_noise_does_not_decide_the_front() -> None:
    # Same size, 1 % apart in latency: the better agreement dominates; 3x slower still counts.
    same_size = [_entry(6000, 0.0201, 0.95, 0.94), _entry(6000, 0.0203, 0.97, 0.96)]
    assert pareto_front(same_size) == [False, True]
    slower = [_entry(6000, 0.02, 0.95, 0.94), _entry(6000, 0.06, 0.97, 0.96)]
    assert pareto_front(slower) == [True, True]


def test_without_eval_labels_the_front_ignores_accuracy() -> None:
    entries = [_entry(100, 0.1, 0.90, None), _entry(200, 0.2, 0.90, None)]
    assert pareto_front(entries) == [True, False]


def test_the_grid_is_temperature_then_alpha_then_size_ratio() -> None:
    job = spec(sweep={"temperature": [2.0, 8.0], "size_ratio": [0.05, 0.2]})
    grid = [
        (s.distillation.temperature, s.distillation.alpha, s.student.size_ratio)
        for s in candidate_specs(job)
    ]
    assert grid == [(2.0, 0.1, 0.05), (2.0, 0.1, 0.2), (8.0, 0.1, 0.05), (8.0, 0.1, 0.2)]
    assert all(s.sweep is None for s in candidate_specs(job))


def test_more_than_27_combinations_are_refused_naming_sweep() -> None:
    with pytest.raises(ValidationError) as err:
        spec(
            sweep={
                "temperature": [1.0, 2.0, 3.0, 4.0],
                "alpha": [0.0, 0.5, 1.0],
                "size_ratio": [0.1, 0.2, 0.3],
            }
        )
    assert err.value.errors()[0]["loc"] == ("sweep",)
    assert "36 combinations" in str(err.value)


# --- the engine --------------------------------------------------------------------------------


def test_every_candidate_comes_from_one_teacher_pass(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    CountingTeacher.passes = 0
    job = spec(sweep={"temperature": [2.0, 6.0], "size_ratio": [0.02, 0.2]})
    result = run(tmp_path, teacher_module, digits, job)
    assert CountingTeacher.passes == 1
    report = result.report
    assert report.candidates is not None and report.chosen is not None
    assert [c.index for c in report.candidates] == [0, 1, 2, 3]
    assert len(result.candidates) == 4
    chosen = report.candidates[report.chosen]
    assert report.agreement_top1 == chosen.agreement_top1
    assert report.student.parameters == chosen.parameters
    assert result.files == result.candidates[report.chosen]
    small, big = report.candidates[0], report.candidates[1]
    assert small.parameters < big.parameters
    best = max(c.agreement_top1 for c in report.candidates)
    assert chosen.agreement_top1 >= best - 0.005
    for c in report.candidates:  # each candidate's own file, measured as it runs
        (variant,) = c.variants or []
        assert variant.format == "safetensors"
        assert variant.agreement_top1 == c.agreement_top1


def test_a_stopped_sweep_resumes_at_the_next_candidate(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    job = spec(sweep={"size_ratio": [0.05, 0.2]})
    first = tmp_path / "work" / "candidates" / "0" / "result.json"
    with pytest.raises(Stopped):
        run(tmp_path, teacher_module, digits, job, should_stop=first.exists)
    assert first.exists()
    assert not (tmp_path / "work" / "candidates" / "1" / "result.json").exists()
    stored = Stored.model_validate_json(first.read_bytes())  # the report as the model has it
    assert stored.report.variants is not None and set(stored.files) == {"safetensors"}
    written = first.stat().st_mtime_ns
    result = run(tmp_path, teacher_module, digits, job)
    assert first.stat().st_mtime_ns == written  # candidate 0 was not trained again
    assert len(result.report.candidates or []) == 2
    fresh = run(tmp_path / "fresh", teacher_module, digits, job)
    assert [c.agreement_top1 for c in result.report.candidates or []] == [
        c.agreement_top1 for c in fresh.report.candidates or []
    ]


def test_a_baseline_reports_what_distillation_bought(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    result = run(tmp_path, teacher_module, digits, spec(baseline=True), labels=True)
    report, base, gain = result.report, result.report.baseline, result.report.distillation_gain
    assert report.candidates is None and base is not None and gain is not None
    assert base.parameters == report.student.parameters
    assert gain.student_accuracy == pytest.approx(report.student_accuracy - base.student_accuracy)
    assert gain.agreement_top1 == pytest.approx(report.agreement_top1 - base.agreement_top1)


def test_a_baseline_without_labels_is_refused(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    with pytest.raises(UserError, match="baseline"):
        run(tmp_path, teacher_module, digits, spec(baseline=True))


def test_a_sweeps_baseline_is_the_chosen_students_size(
    tmp_path: Path, teacher_module: nn.Module, digits: Any
) -> None:
    job = spec(sweep={"size_ratio": [0.02, 0.2]}, baseline=True)
    report = run(tmp_path, teacher_module, digits, job, labels=True).report
    assert report.candidates is not None and report.chosen is not None
    assert report.baseline is not None and report.distillation_gain is not None
    chosen = report.candidates[report.chosen]
    assert report.baseline.parameters == chosen.parameters
    assert report.distillation_gain.agreement_top1 == pytest.approx(
        chosen.agreement_top1 - report.baseline.agreement_top1
    )
    assert (tmp_path / "work" / "candidates" / "baseline" / "result.json").exists()
