"""Distillation losses: small pure functions, their math in the docstrings.

Notation: ``s`` student logits and ``t`` teacher logits, both ``[N, C]``; ``T`` the
temperature; ``softmax(z/T)`` the "softened" distribution. All losses are computed in
float32 whatever dtype the logits come in (bf16 logits from autocast lose too many
digits inside a log-softmax).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's softened distribution ``p = softmax(t / T)``, ``[N, C]``.

    For an ensemble, ``teacher_logits`` is ``[K, N, C]`` and the target is the mean of the
    K teachers' softened probabilities, ``p = (1/K) Σ_k softmax(t_k / T)`` (averaging
    probabilities, not logits: each teacher votes with a distribution).
    """
    probs = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return probs.mean(dim=0) if probs.dim() == 3 else probs


def soft_loss(
    student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T² · KL(p ‖ softmax(s / T))``, averaged over the batch (``batchmean``).

    KL(p ‖ q) = Σ_c p_c (log p_c − log q_c), summed over classes and divided by N: this is
    the true KL per sample (``reduction="mean"`` would also divide by C). Terms with
    p_c = 0 contribute 0 (``kl_div`` uses xlogy).

    Why T²: ∂KL/∂s_c = (q_c − p_c) / T, and for T large against the logits,
    q_c − p_c ≈ (s_c − t_c − mean(s − t)) / (C·T), so the gradient of the bare KL shrinks
    like 1/T². Multiplying by T² keeps the soft term's gradient about the same size for
    any T, so alpha keeps the same meaning and the learning rate need not be re-tuned when
    T changes (Hinton, Vinyals & Dean 2015, §2).
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_q, target_probs.float(), reduction="batchmean")
    return kl * temperature**2


def kd_loss(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton's knowledge-distillation loss.

    With labels y:   alpha · CE(y, s) + (1 − alpha) · T² · KL(softmax(t/T) ‖ softmax(s/T))
    Without labels:  T² · KL(softmax(t/T) ‖ softmax(s/T))   (the soft term alone)

    ``target_probs`` is ``soft_targets(t, T)`` (the mean over teachers for an ensemble).
    CE is the ordinary cross-entropy at T = 1, averaged over the batch.
    """
    soft = soft_loss(student_logits, target_probs, temperature)
    if labels is None:
        return soft
    hard = F.cross_entropy(student_logits.float(), labels)
    return alpha * hard + (1.0 - alpha) * soft


class LossFn(Protocol):
    """A training loss: student logits, the teacher's softened distribution, labels or None."""

    def __call__(
        self,
        student_logits: torch.Tensor,
        target_probs: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        temperature: float,
        alpha: float,
    ) -> torch.Tensor: ...


# The job spec's ``distillation.loss`` picks one by name (a closed choice, never a path).
LOSSES: dict[str, LossFn] = {"kd": kd_loss}
