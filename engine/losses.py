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


def kd_terms(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The two terms of ``kd_loss``, apart (the trainer reports both per epoch): the soft
    term ``T² · KL(p ‖ softmax(s/T))`` and the hard term ``CE(y, s)`` (None without labels).

    ``labels`` may cover only the batch's first rows: rows past them (MUNGE's synthetic
    samples, see ``augment``) have no label and enter only the soft term."""
    soft = soft_loss(student_logits, target_probs, temperature)
    if labels is None:
        return soft, None
    return soft, F.cross_entropy(student_logits[: len(labels)].float(), labels)


def combine_kd(soft: torch.Tensor, hard: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``alpha · hard + (1 − alpha) · soft``, or the soft term alone without labels."""
    return soft if hard is None else alpha * hard + (1.0 - alpha) * soft


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
    soft, hard = kd_terms(student_logits, target_probs, labels, temperature=temperature)
    return combine_kd(soft, hard, alpha)


def projected_input_gradient(
    probs: torch.Tensor, x: torch.Tensor, v: torch.Tensor, *, create_graph: bool
) -> torch.Tensor:
    """``g_i = ∇_{x_i} ⟨v_i, p(x_i)⟩``, ``[N, *sample]``: the input gradient of the softened
    output ``probs = softmax(f(x)/T)`` along the direction ``v_i`` of the output space.

    One backward pass gives every sample's vector–Jacobian product ``v_iᵀ J(x_i)``, where
    ``J = ∂p/∂x`` is the C × D Jacobian: a random projection of J instead of all C rows (C
    backward passes). ``create_graph`` keeps the graph for a second derivative (the
    student's, whose gradient trains its weights). With batch norm in training mode a
    sample's output also depends on the batch statistics; ``g`` then includes that coupling
    (small, about 1/√N).
    """
    (grad,) = torch.autograd.grad((probs * v).sum(), x, create_graph=create_graph)
    return grad


def jacobian_loss(student_grad: torch.Tensor, teacher_grad: torch.Tensor) -> torch.Tensor:
    """``(1/N) Σ_i ‖ g_s,i/‖g_s,i‖ − g_t,i/‖g_t,i‖ ‖²``, in [0, 4]: derivative matching on
    unit-normalised input gradients (Srinivas & Fleuret 2018; Czarnecki et al. 2017 match
    derivatives unnormalised).

    Why normalised: the raw gradients scale with 1/T, with the inputs' units and with the
    teacher's confidence, so an unnormalised term would need its weight re-tuned for every
    T and dataset; the direction alone keeps ``jacobian_weight`` = 1 meaningful, like the T²
    of ``soft_loss``. A gradient that vanishes (norm under 1e-12) counts as zero.
    """
    dtype = torch.promote_types(student_grad.dtype, torch.float32)
    s = F.normalize(student_grad.flatten(1).to(dtype), dim=1, eps=1e-12)
    t = F.normalize(teacher_grad.flatten(1).to(dtype), dim=1, eps=1e-12)
    return (s - t).pow(2).sum(dim=1).mean()


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
# kd_jacobian's output term is kd_loss; its derivative term (``jacobian_loss``) needs the
# models and the inputs, not only the outputs, and is added by ``jacobian.JacobianMatching``.
LOSSES: dict[str, LossFn] = {"kd": kd_loss, "kd_jacobian": kd_loss}
INPUT_GRADIENT_LOSSES = frozenset({"kd_jacobian"})
