"""Progress events of a job: which stage, how far along the whole job, the latest metrics.

One event shape for every stage: ``{"stage", "progress", "epochs", "epoch", "step",
"metrics"}``; ``progress`` is the share of the whole job done, each stage filling its own
slice of the bar (``STAGE_START`` to ``STAGE_END``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

Progress = Callable[[dict[str, Any]], None]

# Share of the whole job's progress bar each stage ends at.
STAGE_END = {"soft_labeling": 0.10, "training": 0.85, "evaluating": 0.90, "exporting": 1.0}
STAGE_START = {"soft_labeling": 0.0, "training": 0.10, "evaluating": 0.85, "exporting": 0.90}
# Training progress crosses a pipe to the worker, which writes the job row at most every
# 0.5 s: one line per step (9,380 in a 20-epoch MNIST job) only made the child block on a
# full pipe (about 9 s of that job) and the worker parse lines it then dropped.
STEP_EVENTS_EVERY_S = 0.25


class Reporter:
    """Turns stage fractions and training steps into events for ``on_progress``."""

    def __init__(self, on_progress: Progress, epochs: int) -> None:
        self.on_progress, self.epochs = on_progress, epochs
        self.steps = 0
        self.emitted = -math.inf

    def emit(self, stage: str, fraction: float, **extra: Any) -> None:
        lo, hi = STAGE_START[stage], STAGE_END[stage]
        self.on_progress(
            {
                "stage": stage,
                "progress": lo + (hi - lo) * min(1.0, fraction),
                "epochs": self.epochs,
                "epoch": extra.pop("epoch", None),
                "step": extra.pop("step", None),
                "metrics": extra.pop("metrics", {}),
            }
        )

    def step(self, event: dict[str, Any]) -> None:
        """After every training step; an event at most every ``STEP_EVENTS_EVERY_S`` (and
        for the last step)."""
        self.steps = event["step"]
        now = time.monotonic()
        if now - self.emitted < STEP_EVENTS_EVERY_S and event["step"] < event["steps"]:
            return
        self.emitted = now
        self.emit(
            "training",
            event["step"] / event["steps"],
            epoch=event["epoch"] + 1,
            step=event["step"],
            metrics={"train_loss": event["loss"], "learning_rate": event["lr"]},
        )

    def epoch_end(self, record: dict[str, Any]) -> None:
        """After an epoch's record (``core.contracts.EpochRecord``): its mean loss and
        agreement, the same numbers as the job's /metrics row."""
        epoch = int(record["epoch"])
        metrics = {"train_loss": record["train_loss"], "eval_agreement": record["eval_agreement"]}
        self.emit("training", epoch / self.epochs, epoch=epoch, step=self.steps, metrics=metrics)
