"""Evaluation: how closely the student follows the teacher, on held-out samples.

For an ensemble, "the teacher" is its averaged distribution at T = 1 (the same target the
student was trained on, at T = 1): its prediction is the argmax of the mean probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.rows import Rows

Predict = Callable[[torch.Tensor], torch.Tensor]  # input batch → float32 logits [b, C]


def predict(fn: Predict, x: torch.Tensor | Rows, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every row of ``x``, float32 on the host, in batches under inference mode.

    Rows are read one batch at a time: only the logits (C numbers a sample) are kept."""
    outs = []
    n = len(x) if isinstance(x, torch.Tensor) else x.num_samples
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            if isinstance(x, torch.Tensor):
                xb = x[start:stop]
            else:
                xb = x.read(np.arange(start, stop, dtype=np.int64))
            outs.append(fn(xb).float().cpu())
    return torch.cat(outs)


def teacher_probs(teacher_logits: torch.Tensor) -> torch.Tensor:
    """[N, C] or [K, N, C] logits → the (mean) teacher distribution at T = 1, float64."""
    probs = F.softmax(teacher_logits.double(), dim=-1)
    return probs.mean(dim=0) if probs.dim() == 3 else probs


def agreement(p_teacher: torch.Tensor, student_logits: torch.Tensor, k: int = 1) -> float:
    """Share of samples where the teacher's top-1 class is in the student's top-k.

    Top-1 is the argmax (the first of tied maxima, as numpy's and torch's argmax pick): an
    int8 student's logits tie exactly now and then, and ``topk`` may pick another of them."""
    k = min(k, student_logits.shape[-1])
    if k == 1:
        top = student_logits.argmax(-1, keepdim=True)
    else:
        top = student_logits.topk(k, dim=-1).indices
    return float((top == p_teacher.argmax(-1, keepdim=True)).any(-1).double().mean())


def mean_kl(p_teacher: torch.Tensor, student_logits: torch.Tensor) -> float:
    """Mean over samples of KL(teacher ‖ student) at T = 1, in nats, computed in float64."""
    log_q = F.log_softmax(student_logits.double(), dim=-1)
    kl = torch.xlogy(p_teacher, p_teacher) - p_teacher * log_q
    return float(kl.sum(-1).mean())


def accuracy(logits_or_probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits_or_probs.argmax(-1) == labels).double().mean())


def eval_metrics(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor | None
) -> dict[str, Any]:
    p = teacher_probs(teacher_logits)
    return {
        "agreement_top1": agreement(p, student_logits, 1),
        "agreement_top5": agreement(p, student_logits, 5),
        "kl_divergence": mean_kl(p, student_logits),
        "teacher_accuracy": None if labels is None else accuracy(p, labels),
        "student_accuracy": None if labels is None else accuracy(student_logits, labels),
        "eval_samples": int(len(student_logits)),
    }
