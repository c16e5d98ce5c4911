"""The training loop: schedule, learning, determinism, the stop probe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save
from torch import nn

from engine import trainer
from engine.errors import Stopped, UserError
from engine.losses import soft_targets
from engine.trainer import TrainConfig, lr_at, train

CPU = torch.device("cpu")
TEMPERATURE = 2.0


def problem(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=generator)
    teacher = torch.randn(6, 4, generator=generator) * 2
    return x, (x @ teacher).unsqueeze(0)  # logits [1, N, C]


def config(**overrides: object) -> TrainConfig:
    base = dict(
        epochs=4,
        batch_size=16,
        learning_rate=1e-2,
        weight_decay=0.0,
        warmup_fraction=0.1,
        temperature=TEMPERATURE,
        alpha=0.1,
        seed=3,
        checkpoint_every=5,
    )
    return TrainConfig(**(base | overrides))  # type: ignore[arg-type]


def student(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))


def run(tmp: Path, cfg: TrainConfig, **kwargs: object) -> bytes:
    x, t = problem()
    model = student()
    train(
        model,
        x,
        None,
        lambda idx, xb: soft_targets(t[:, idx], cfg.temperature),
        cfg,
        device=CPU,
        workdir=tmp,
        fingerprint="job",
        **kwargs,
    )  # type: ignore[arg-type]
    return save(model.state_dict())


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_zero() -> None:
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_training_brings_the_student_to_the_teacher(tmp_path: Path) -> None:
    x, t = problem()
    model = student()
    before = nn.functional.kl_div(
        model(x).log_softmax(-1), soft_targets(t, 1.0), reduction="batchmean"
    )
    train(
        model,
        x,
        None,
        lambda idx, xb: soft_targets(t[:, idx], TEMPERATURE),
        config(epochs=30),
        device=CPU,
        workdir=tmp_path,
        fingerprint="job",
    )
    after = nn.functional.kl_div(
        model(x).log_softmax(-1), soft_targets(t, 1.0), reduction="batchmean"
    )
    assert after < 0.2 * before


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    assert run(tmp_path / "a", config()) == run(tmp_path / "b", config())
    assert run(tmp_path / "c", config()) != run(tmp_path / "d", config(seed=4))


def test_stop_probe_stops_at_the_step_it_turns_true_and_leaves_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer, "STOP_CHECK_EVERY_S", 0.0)  # ask before every step
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Stopped):
        run(tmp_path, config(), should_stop=should_stop)
    assert calls["n"] == 4
    assert (tmp_path / "checkpoint.json").exists()


def test_stop_probe_is_asked_at_most_every_interval(tmp_path: Path) -> None:
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return False

    started = time.monotonic()
    run(tmp_path, config(epochs=3), should_stop=should_stop)
    elapsed = time.monotonic() - started
    assert 1 <= calls["n"] <= 1 + elapsed / trainer.STOP_CHECK_EVERY_S


def test_progress_is_reported_per_step_and_per_epoch(tmp_path: Path) -> None:
    steps: list[dict[str, object]] = []
    epochs: list[int] = []
    run(tmp_path, config(epochs=2), on_step=steps.append, on_epoch=lambda e, m: epochs.append(e))
    assert [s["step"] for s in steps] == list(range(1, 13))
    assert {"epoch", "step", "loss", "lr"} <= set(steps[0])
    assert epochs == [0, 1]


def test_labels_feed_the_hard_term(tmp_path: Path) -> None:
    x, t = problem()
    y = t[0].argmax(-1)
    a, b = student(), student()
    train(
        a,
        x,
        y,
        lambda idx, xb: soft_targets(t[:, idx], TEMPERATURE),
        config(alpha=0.9),
        device=CPU,
        workdir=tmp_path / "a",
        fingerprint="j",
    )
    train(
        b,
        x,
        None,
        lambda idx, xb: soft_targets(t[:, idx], TEMPERATURE),
        config(alpha=0.9),
        device=CPU,
        workdir=tmp_path / "b",
        fingerprint="j",
    )
    assert save(a.state_dict()) != save(b.state_dict())


def test_a_last_batch_of_one_sample_is_skipped_for_batch_norm() -> None:
    from engine.trainer import batches_per_epoch

    assert batches_per_epoch(96, 16) == 6
    assert batches_per_epoch(97, 16) == 6
    assert batches_per_epoch(98, 16) == 7
    with pytest.raises(UserError):
        batches_per_epoch(1, 16)


def test_each_epoch_reports_its_loss_terms_and_the_history(tmp_path: Path) -> None:
    """Per epoch: the mean soft and hard terms (train loss is their alpha-mix, so a wrong
    split would show), the last learning rate and what the engine's epoch hook returned;
    checkpoints and a resume are reported as they happen."""
    x, t = problem()
    y = t[0].argmax(-1)
    cfg = config(epochs=2, checkpoint_every=5)
    events: list[dict[str, Any]] = []

    def fit(model: nn.Module) -> None:
        train(
            model,
            x,
            y,
            lambda idx, xb: soft_targets(t[:, idx], cfg.temperature),
            cfg,
            device=CPU,
            workdir=tmp_path,
            fingerprint="job",
            on_epoch=lambda e, m: {"eval_agreement": 0.25 * (e + 1)},
            on_event=events.append,
        )

    fit(student())
    records = [e["record"] for e in events if e["event"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert r["hard_loss"] is not None and r["soft_loss"] is not None
        mixed = cfg.alpha * r["hard_loss"] + (1 - cfg.alpha) * r["soft_loss"]
        assert r["train_loss"] == pytest.approx(mixed, rel=1e-5)
        assert r["seconds"] > 0
    assert [r["eval_agreement"] for r in records] == [0.25, 0.5]
    assert records[1]["learning_rate"] == pytest.approx(lr_at(11, 12, 1, cfg.learning_rate))
    checkpoints = [e["step"] for e in events if e["event"] == "checkpoint"]
    assert checkpoints == [5, 10, 12]  # every 5 steps, and at the end
    events.clear()
    fit(student())  # the final checkpoint exists: nothing left to train
    # The finished epochs' records come with it (the worker stores any a kill lost).
    assert events == [{"event": "resumed", "epoch": 2, "step": 12, "records": records}]


def test_a_checkpoint_on_an_epoch_boundary_follows_and_holds_that_epochs_record(
    tmp_path: Path,
) -> None:
    """A kill right after a checkpoint must not lose an epoch's record: a checkpoint due on
    an epoch's last step is written after the record, and carries every finished record."""
    x, t = problem()
    cfg = config(epochs=2, checkpoint_every=6)  # 6 steps per epoch
    events: list[dict[str, Any]] = []
    train(
        student(),
        x,
        None,
        lambda idx, xb: soft_targets(t[:, idx], cfg.temperature),
        cfg,
        device=CPU,
        workdir=tmp_path,
        fingerprint="job",
        on_event=events.append,
    )
    kinds = [(e["event"], e.get("step")) for e in events]
    assert kinds == [("epoch", None), ("checkpoint", 6), ("epoch", None), ("checkpoint", 12)]
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    assert pointer["train"]["records"] == [e["record"] for e in events if e["event"] == "epoch"]


def test_checkpoints_are_also_taken_by_time_an_epochs_last_one_after_its_record(
    tmp_path: Path,
) -> None:
    def kinds(cfg: TrainConfig, workdir: Path) -> list[tuple[str, object]]:
        events: list[dict[str, Any]] = []
        run(workdir, cfg, on_event=events.append)
        return [(e["event"], e.get("step")) for e in events]

    # By steps only: the one at the end (2 epochs of 6 steps).
    assert kinds(config(epochs=2, checkpoint_every=100), tmp_path / "steps") == [
        ("epoch", None),
        ("epoch", None),
        ("checkpoint", 12),
    ]
    # Any positive interval has passed by the next step: a checkpoint after every step.
    every_step = config(epochs=2, checkpoint_every=100, checkpoint_every_seconds=1e-9)
    first = [("checkpoint", s) for s in range(1, 6)] + [("epoch", None), ("checkpoint", 6)]
    second = [("checkpoint", s) for s in range(7, 12)] + [("epoch", None), ("checkpoint", 12)]
    assert kinds(every_step, tmp_path / "time") == first + second


def test_a_kill_after_a_time_checkpoint_resumes_there_to_the_same_bytes(tmp_path: Path) -> None:
    """Only time takes checkpoints here (never by steps); the resumed run, at another cadence
    (which the checkpoint does not depend on), ends with the uninterrupted run's bytes."""
    straight = run(tmp_path / "straight", config(checkpoint_every=0))

    def killed_at_step_9(event: dict[str, Any]) -> None:
        if event["step"] == 9:
            raise KeyboardInterrupt  # before step 9's checkpoint, like a kill

    with pytest.raises(KeyboardInterrupt):
        run(
            tmp_path / "killed",
            config(checkpoint_every=0, checkpoint_every_seconds=1e-9),
            on_step=killed_at_step_9,
        )
    pointer = json.loads((tmp_path / "killed" / "checkpoint.json").read_text())
    assert pointer["train"]["step"] == 8
    assert run(tmp_path / "killed", config(checkpoint_every=5)) == straight
