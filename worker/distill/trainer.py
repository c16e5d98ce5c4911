"""The training loop: one readable function, nanoGPT style.

AdamW; linear warm-up then cosine decay to zero; gradient clipping at norm 1; batches
sliced from whole tensors by index (no per-sample Python, no DataLoader); the data order
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

from worker.distill.checkpoint import load_checkpoint, save_checkpoint
from worker.distill.device import autocast, to_device
from worker.distill.errors import Cancelled, UserError
from worker.distill.losses import kd_loss

GRAD_CLIP = 1.0  # max global L2 norm of the gradient (the usual value: timm, nanoGPT)
ON_DEVICE_BYTES = 1 << 30  # below this, the whole transfer set lives on the GPU

# (batch indices, input batch on device) → the teacher's softened distribution [b, C] on
# device: ``losses.soft_targets`` of its logits (precomputed once for cached soft labels).
TargetFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
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
    checkpoint_every: int = 1000
    # Also after this many seconds since the last checkpoint (0: steps only): a kill loses
    # at most this much training, whatever the steps cost.
    checkpoint_every_s: float = 0.0


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    seconds: float  # training wall time over every attempt
    resumed_from_step: int


def _checkpoint_due(cfg: TrainConfig, step: int, total: int, since_last_s: float) -> bool:
    by_steps = cfg.checkpoint_every > 0 and (step % cfg.checkpoint_every == 0 or step == total)
    by_time = cfg.checkpoint_every_s > 0 and since_last_s >= cfg.checkpoint_every_s
    return by_steps or by_time


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
        raise UserError("dataset_too_small", "dataset: training needs at least 2 samples")
    if batch_size == 1:
        raise UserError("bad_spec", "training.batch_size: batch norm needs at least 2")
    return n // batch_size + (1 if n % batch_size > 1 else 0)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    target_probs: TargetFn,
    cfg: TrainConfig,
    *,
    device: torch.device,
    workdir: Path,
    fingerprint: str,
    on_step: Callable[[dict[str, Any]], None] = lambda ev: None,
    on_epoch: Callable[[int, nn.Module], None] = lambda epoch, model: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train ``model`` in place on (x, y) against the teacher's distribution ``target_probs``.

    ``on_step`` gets {"epoch", "step", "steps", "loss", "lr"} after every step; ``on_epoch``
    runs after each epoch (the engine evaluates there; it must not touch RNG or weights).
    Raises ``Cancelled`` after saving a checkpoint when ``should_stop()`` turns true (asked
    at most every ``STOP_CHECK_EVERY_S``).
    """
    n = len(x)
    steps_per_epoch = batches_per_epoch(n, cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_fraction * total)
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    fingerprint = f"{fingerprint}:{sorted(asdict(cfg).items())}"
    state = load_checkpoint(workdir, model=model, optimizer=optimizer, fingerprint=fingerprint)
    resumed = state is not None
    if state is None:
        state = {"step": 0, "epoch": 0, "batch": 0, "seconds": 0.0, "loss": None}
    resumed_from = int(state["step"])

    # Data stays whole: on the GPU when it fits, else pinned host memory sliced per batch.
    if device.type == "cuda" and x.nbytes <= ON_DEVICE_BYTES:
        x = to_device(x, device)
        y = None if y is None else to_device(y, device)
    elif device.type == "cuda":
        x = x.pin_memory()

    def checkpoint() -> None:
        save_checkpoint(
            workdir, model=model, optimizer=optimizer, train=state, fingerprint=fingerprint
        )

    started = time.perf_counter() - float(state["seconds"])
    step, loss_value = int(state["step"]), state["loss"]
    next_stop_check = 0.0
    last_checkpoint = time.monotonic()
    for epoch in range(int(state["epoch"]), cfg.epochs):
        order = epoch_order(cfg.seed, epoch, n)
        first = int(state["batch"]) if resumed and epoch == int(state["epoch"]) else 0
        for batch in range(first, steps_per_epoch):
            now = time.monotonic()
            if now >= next_stop_check:
                next_stop_check = now + STOP_CHECK_EVERY_S
                if should_stop():
                    state.update(
                        step=step,
                        epoch=epoch,
                        batch=batch,
                        loss=loss_value,
                        seconds=time.perf_counter() - started,
                    )
                    checkpoint()
                    raise Cancelled()
            idx = order[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
            dev_idx = idx.to(x.device)
            xb = to_device(x[dev_idx], device)
            yb = None if y is None else to_device(y[dev_idx.to(y.device)], device)
            # The teacher side is fp32; only the student's forward runs under autocast.
            probs = target_probs(idx, xb)
            lr = lr_at(step, total, warmup, cfg.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device):
                logits = model(xb)
            loss = kd_loss(logits, probs, yb, temperature=cfg.temperature, alpha=cfg.alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            step += 1
            loss_value = float(loss.item())  # a sync point on CUDA: once a step, for progress
            on_step({"epoch": epoch, "step": step, "steps": total, "loss": loss_value, "lr": lr})
            # Also at the very end, so a re-call after a later stage failed skips training.
            if _checkpoint_due(cfg, step, total, time.monotonic() - last_checkpoint):
                next_epoch, next_batch = (epoch, batch + 1)
                if next_batch == steps_per_epoch:
                    next_epoch, next_batch = epoch + 1, 0
                state.update(
                    step=step,
                    epoch=next_epoch,
                    batch=next_batch,
                    loss=loss_value,
                    seconds=time.perf_counter() - started,
                )
                resumed = True  # the state now describes where the next batch starts
                checkpoint()
                last_checkpoint = time.monotonic()
        model.eval()
        on_epoch(epoch, model)
        model.train()
    model.eval()
    seconds = time.perf_counter() - started
    return TrainResult(step, loss_value, seconds, resumed_from)
