"""The training loop: one readable function, nanoGPT style.

AdamW; linear warm-up then cosine decay to zero; gradient clipping at norm 1; batches
read by index from ``Rows`` (whole tensors, or a memory map read one batch at a time: no
per-sample Python, no DataLoader); the loss comes from ``losses.LOSSES``; the data order
of epoch e is ``randperm(N)`` from a generator seeded with (seed, e), so it needs no state
beyond (epoch, batch). Deterministic on CPU: the same seed gives the same bytes, and a
resumed run gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ErrorCode
from engine.augment import Augment
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.device import as_channels_last, autocast, to_device, uses_channels_last
from engine.errors import Stopped, UserError
from engine.jacobian import JacobianMatching
from engine.losses import INPUT_GRADIENT_LOSSES, LOSSES, combine_kd, kd_terms
from engine.rows import Rows, TensorRows

GRAD_CLIP = 1.0  # max global L2 norm of the gradient (the usual value: timm, nanoGPT)
ON_DEVICE_BYTES = 1 << 30  # below this, the whole transfer set lives on the GPU

# (batch indices, input batch on device) → the teacher's softened distribution [b, C] on
# device: ``losses.soft_targets`` of its logits (precomputed once for cached soft labels).
TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (model, batch indices, input batch on device) → (loss, soft term, hard term): a whole
# objective that replaces the loss of ``losses.LOSSES`` (language models: ``lm.py``).
Objective = Callable[
    [nn.Module, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
]
STOP_CHECK_EVERY_S = 0.2  # how often ``should_stop`` is asked (it may touch the disk)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_fraction: float
    temperature: float
    alpha: float
    seed: int
    checkpoint_every: int  # steps; 0: never
    loss: str = "kd"  # a name in ``losses.LOSSES``
    # Also once this many seconds passed since the last checkpoint (0: by steps only), so a
    # kill loses at most this much training whatever a step costs or the set's size.
    checkpoint_every_seconds: float = 0.0


# How often checkpoints are taken does not change what training computes: a run resumes
# from a checkpoint taken at another cadence.
CADENCE = frozenset({"checkpoint_every", "checkpoint_every_seconds"})


@dataclass
class TrainResult:
    steps: int
    # The last epoch's mean loss: its ``EpochRecord.train_loss`` (the last row of the job's
    # /metrics), not the loss of the last batch alone.
    final_loss: float | None
    seconds: float  # training wall time over every attempt


# An event for the job's history: {"event": "epoch" | "checkpoint" | "resumed", ...}.
EventFn = Callable[[dict[str, Any]], None]
EpochFn = Callable[[int, nn.Module], dict[str, Any] | None]


class EpochStats:
    """Means of one epoch's loss terms, summed on the device (no sync per step)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.batches = 0
        self.sums: dict[str, torch.Tensor] = {}
        self.lr = 0.0

    def add(self, lr: float, **terms: torch.Tensor | None) -> None:
        self.batches += 1
        self.lr = lr
        for name, value in terms.items():
            if value is not None:
                total = self.sums.get(name)
                self.sums[name] = value.detach() if total is None else total + value.detach()

    def record(self, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        """The epoch's row (``core.contracts.EpochRecord``); a resumed epoch counts only the
        batches run since the resume."""
        means = {k: float(v) / max(1, self.batches) for k, v in self.sums.items()}
        return {
            "epoch": epoch + 1,
            "train_loss": means.get("loss"),
            "soft_loss": means.get("soft"),
            "hard_loss": means.get("hard"),
            "eval_agreement": extra.get("eval_agreement"),
            "learning_rate": self.lr,
            "seconds": time.perf_counter() - self.started,
        }


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then half a cosine from ``base`` to 0."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """ceil(n / batch_size), except that a last batch of one sample is skipped: batch norm
    cannot train on a single sample (the skipped one differs each epoch)."""
    if n < 2:
        raise UserError(ErrorCode.DATASET_TOO_SMALL, "dataset: training needs at least 2 samples")
    if batch_size == 1:
        raise UserError(ErrorCode.BAD_SPEC, "training.batch_size: batch norm needs at least 2")
    return n // batch_size + (1 if n % batch_size > 1 else 0)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def train(
    model: nn.Module,
    x: torch.Tensor | Rows,
    y: torch.Tensor | None,
    target_probs: TargetFn,
    cfg: TrainConfig,
    *,
    device: torch.device,
    workdir: Path,
    fingerprint: str,
    on_step: Callable[[dict[str, Any]], None] = lambda ev: None,
    on_epoch: EpochFn = lambda epoch, model: None,
    should_stop: Callable[[], bool] = lambda: False,
    on_event: EventFn = lambda ev: None,
    augment: Augment | None = None,
    jacobian: JacobianMatching | None = None,
    objective: Objective | None = None,
) -> TrainResult:
    """Train ``model`` in place on (x, y) against the teacher's distribution ``target_probs``.

    ``x`` is a tensor (``y`` its labels) or ``Rows`` (which carry their own labels; ``y``
    is then ignored): batches are read by index, so a memory-mapped set is never whole in
    memory. ``on_step`` gets {"epoch", "step", "steps", "loss", "lr"} after every step;
    ``on_epoch`` runs after each epoch (the engine evaluates there; it must not touch RNG or
    weights; it may return metrics for the epoch's record). ``on_event`` gets the history:
    each finished epoch's record, each checkpoint, where a resumed run starts. Raises
    ``Stopped`` after saving a checkpoint when ``should_stop()`` turns
    true (asked at most every ``STOP_CHECK_EVERY_S``).

    ``augment`` transforms each batch (seeded by (seed, epoch, batch)) before the teacher
    and the student see it; ``jacobian`` computes the whole objective of a loss in
    ``INPUT_GRADIENT_LOSSES`` (it runs the teacher itself; ``target_probs`` is then unused).
    ``objective`` computes the whole loss instead (``target_probs`` and ``cfg.loss`` unused).
    """
    if (cfg.loss in INPUT_GRADIENT_LOSSES) != (jacobian is not None):
        raise ValueError(f"loss {cfg.loss!r} and the jacobian objective go together")
    rows: Rows = TensorRows(x, y) if isinstance(x, torch.Tensor) else x
    run = _Run(
        model, _on_device(rows, device), target_probs, cfg, device, workdir, fingerprint, objective
    )
    run.on_step, run.should_stop, run.on_event = on_step, should_stop, on_event
    run.augment, run.jacobian = augment, jacobian
    if run.resumed:
        # The finished epochs' records ride along: a kill can fall after a checkpoint but
        # before the worker stored the records that preceded it.
        records = run.state.get("records", [])
        on_event(
            {
                "event": "resumed",
                "epoch": int(run.state["epoch"]),
                "step": run.steps,
                "records": records,
            }
        )
    for epoch in range(int(run.state["epoch"]), cfg.epochs):
        order = epoch_order(cfg.seed, epoch, run.n)
        run.stats = EpochStats()
        first = int(run.state["batch"]) if run.resumed and epoch == int(run.state["epoch"]) else 0
        for batch in range(first, run.steps_per_epoch):
            run.stop_if_asked(epoch, batch)
            run.step(epoch, batch, order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size])
        model.eval()
        extra = on_epoch(epoch, model) or {}
        record = run.stats.record(epoch, extra)
        run.records.append(record)
        on_event({"event": "epoch", "record": record})
        if run.save_due:
            run.save(epoch + 1, 0)
        model.train()
    model.eval()
    if run.channels_last:  # exports and checkpoints see the usual layout
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    final = run.records[-1]["train_loss"] if run.records else run.loss_value
    return TrainResult(run.steps, final, time.perf_counter() - run.started)


def _on_device(rows: Rows, device: torch.device) -> Rows:
    """On CUDA, a set already in memory moves to the GPU when it fits; the rest is read
    per batch on the host and copied (pinned, non-blocking) by ``to_device``."""
    if device.type == "cuda" and isinstance(rows, TensorRows) and rows.nbytes <= ON_DEVICE_BYTES:
        return rows.to(device)
    return rows


class _Run:
    """One training run's moving parts: model, optimiser, schedule, checkpoint state."""

    def __init__(
        self,
        model: nn.Module,
        rows: Rows,
        target_probs: TargetFn,
        cfg: TrainConfig,
        device: torch.device,
        workdir: Path,
        fingerprint: str,
        objective: Objective | None = None,
    ) -> None:
        self.model, self.rows, self.targets, self.cfg = model, rows, target_probs, cfg
        self.objective = objective
        self.loss_fn = None if objective is not None else LOSSES[cfg.loss]
        self.device, self.workdir = device, workdir
        self.n = rows.num_samples
        self.steps_per_epoch = batches_per_epoch(self.n, cfg.batch_size)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = round(cfg.warmup_fraction * self.total)
        model.to(device).train()
        self.channels_last = uses_channels_last(model, device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        decisive = sorted((k, v) for k, v in asdict(cfg).items() if k not in CADENCE)
        self.fingerprint = f"{fingerprint}:{decisive}"
        state = load_checkpoint(
            workdir, model=model, optimizer=self.optimizer, fingerprint=self.fingerprint
        )
        self.resumed = state is not None
        self.state: dict[str, Any] = state or {
            "step": 0,
            "epoch": 0,
            "batch": 0,
            "seconds": 0.0,
            "loss": None,
        }
        self.started = time.perf_counter() - float(self.state["seconds"])
        self.steps, self.loss_value = int(self.state["step"]), self.state["loss"]
        self.next_stop_check = 0.0
        self.on_step: Callable[[dict[str, Any]], None] = lambda ev: None
        self.should_stop: Callable[[], bool] = lambda: False
        self.on_event: EventFn = lambda ev: None
        self.augment: Augment | None = None
        self.jacobian: JacobianMatching | None = None
        self.stats = EpochStats()
        # Every finished epoch's record, kept in the checkpoint (see ``ResumedEvent``).
        self.records: list[dict[str, Any]] = list(self.state.get("records", []))
        self.save_due = False
        self.last_save = time.monotonic()

    def save(self, epoch: int, batch: int) -> None:
        """Checkpoint with the data position (epoch, batch) where the next step starts."""
        seconds = time.perf_counter() - self.started
        self.state.update(
            step=self.steps,
            epoch=epoch,
            batch=batch,
            loss=self.loss_value,
            seconds=seconds,
            records=self.records,
        )
        self.save_due = False
        self.last_save = time.monotonic()
        save_checkpoint(
            self.workdir,
            model=self.model,
            optimizer=self.optimizer,
            train=self.state,
            fingerprint=self.fingerprint,
        )
        self.on_event({"event": "checkpoint", "epoch": epoch, "step": self.steps})

    def stop_if_asked(self, epoch: int, batch: int) -> None:
        now = time.monotonic()
        if now < self.next_stop_check:
            return
        self.next_stop_check = now + STOP_CHECK_EVERY_S
        if self.should_stop():
            self.save(epoch, batch)
            raise Stopped()

    def terms(
        self, idx: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor | None, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The loss and, when known apart, its soft and hard terms (the epoch's record)."""
        cfg = self.cfg
        if self.objective is not None:
            return self.objective(self.model, idx, xb)
        if self.jacobian is not None:
            loss, soft, hard, _ = self.jacobian(self.model, xb, yb, epoch=epoch, batch=batch)
            return loss, soft, hard
        # The teacher side is fp32; only the student's forward runs under autocast.
        probs = self.targets(idx, xb)
        with autocast(self.device):
            logits = self.model(xb)
        if cfg.loss == "kd":
            soft, hard = kd_terms(logits, probs, yb, temperature=cfg.temperature)
            return combine_kd(soft, hard, cfg.alpha), soft, hard
        assert self.loss_fn is not None
        loss = self.loss_fn(logits, probs, yb, temperature=cfg.temperature, alpha=cfg.alpha)
        return loss, None, None

    def step(self, epoch: int, batch: int, idx: torch.Tensor) -> None:
        cfg, device = self.cfg, self.device
        host_idx = idx.numpy()
        xb = to_device(self.rows.read(host_idx), device)
        if self.channels_last:
            xb = as_channels_last(xb)
        yb = self.rows.labels(host_idx)
        yb = None if yb is None else to_device(yb, device)
        if self.augment is not None:
            xb, yb = self.augment(xb, yb, epoch=epoch, batch=batch)
        lr = lr_at(self.steps, self.total, self.warmup, cfg.learning_rate)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, soft, hard = self.terms(idx, xb, yb, epoch, batch)
        self.stats.add(lr, loss=loss, soft=soft, hard=hard)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.steps += 1
        self.loss_value = float(loss.item())  # a sync point on CUDA: once a step, for progress
        self.on_step(
            {
                "epoch": epoch,
                "step": self.steps,
                "steps": self.total,
                "loss": self.loss_value,
                "lr": lr,
            }
        )
        # A checkpoint due on an epoch's last batch waits for the epoch's record (``train``
        # saves it then), so the record is in it.
        if self._checkpoint_due():
            if batch + 1 == self.steps_per_epoch:
                self.save_due = True
            else:
                self.save(epoch, batch + 1)

    def _checkpoint_due(self) -> bool:
        """Every ``checkpoint_every`` steps, and once ``checkpoint_every_seconds`` passed since
        the last one; also at the very end, so a re-call after a later stage failed skips
        training. When it is taken changes nothing that is computed: a resumed run gives the
        same bytes wherever it resumes."""
        every, every_s = self.cfg.checkpoint_every, self.cfg.checkpoint_every_seconds
        if every > 0 and (self.steps % every == 0 or self.steps == self.total):
            return True
        return every_s > 0 and time.monotonic() - self.last_save >= every_s
