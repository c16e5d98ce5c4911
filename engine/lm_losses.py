"""Token-level distillation losses for language models, on the stored top-k support.

Notation, at one token position: ``s`` the student's logits over the vocabulary ``V``;
the teacher is stored as its top-k logits ``t_i`` at ids ``I`` (``|I| = k``) and one
``rest_logit`` ``r``, the log of the mean ``exp`` of the other ``V − k`` logits
(``soft_labels.py``). Both sides are compared on the same ``k + 1`` buckets: the k ids,
then "rest", everything else.

At temperature T the teacher's buckets are ``softmax([t_I / T, log(V − k) + r / T])``
(the rest spread evenly: at T = 1 this is the teacher's exact top-k probabilities and
exact remaining mass), the student's ``[log q_I, log(1 − Σ_I q_i)]`` with
``q = softmax(s / T)`` over the whole vocabulary. With ``k ≥ V`` there is no rest bucket
and the buckets are the whole vocabulary (the k ids are then all of it).

- ``kd``: ``T² · KL(P ‖ Q)`` (forward KL, Hinton);
- ``reverse_kl``: ``T² · KL(Q ‖ P)`` (mode seeking, as in MiniLLM);
- ``jsd``: ``T² · [β KL(P ‖ M) + (1 − β) KL(Q ‖ M)]``, ``M = β P + (1 − β) Q`` (the
  generalized Jensen-Shannon divergence of GKD, Agarwal et al. 2024).

Each is a mean over the real tokens (``attention_mask`` 1): padding is never taught. The
hard term is next-token cross-entropy on the data itself: the logits at position j against
the id at j + 1, where both positions are real. The whole loss is
``alpha · hard + (1 − alpha) · soft``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SEQUENCE_LOSSES = ("kd", "reverse_kl", "jsd")


def teacher_buckets(
    topk_logits: torch.Tensor, rest_logit: torch.Tensor | None, vocab: int, temperature: float
) -> torch.Tensor:
    """The teacher's log-probabilities on the buckets at T, ``[..., k + 1]`` (``[..., k]``
    without a rest bucket)."""
    scaled = topk_logits.float() / temperature
    if rest_logit is None:
        return F.log_softmax(scaled, dim=-1)
    k = topk_logits.shape[-1]
    rest = math.log(vocab - k) + rest_logit.float().unsqueeze(-1) / temperature
    return F.log_softmax(torch.cat([scaled, rest], dim=-1), dim=-1)


def student_buckets(
    student_logits: torch.Tensor, topk_indices: torch.Tensor, temperature: float, *, rest: bool
) -> torch.Tensor:
    """The student's log-probabilities on the same buckets, ``[..., k + 1]`` (``[..., k]``
    without ``rest``: the ids then cover the vocabulary); the rest's is the logsumexp of the
    student's softened log-probabilities outside the top-k ids."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    idx = topk_indices.long()
    kept = log_q.gather(-1, idx)
    if not rest:
        return kept
    rest_q = log_q.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)
    return torch.cat([kept, rest_q], dim=-1)


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a ‖ b) over the last axis from log-probabilities; a zero of ``a`` adds 0."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, loss: str, beta: float) -> torch.Tensor:
    """Per position: the named divergence between teacher ``P`` and student ``Q``."""
    if loss == "kd":
        return _kl(log_p, log_q)
    if loss == "reverse_kl":
        return _kl(log_q, log_p)
    if loss == "jsd":
        log_m = torch.logsumexp(
            torch.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]), dim=0
        )
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    raise ValueError(f"unknown sequence loss {loss!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` is true (0 when nothing is)."""
    keep = mask.to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp_min(1.0)


def soft_term(
    student_logits: torch.Tensor,
    topk_logits: torch.Tensor,
    topk_indices: torch.Tensor,
    rest_logit: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    loss: str,
    temperature: float,
    beta: float,
) -> torch.Tensor:
    """``T² · D(P, Q)`` averaged over the real tokens (``mask``), student ``[N, L, V]``."""
    vocab = student_logits.shape[-1]
    log_p = teacher_buckets(topk_logits, rest_logit, vocab, temperature)
    log_q = student_buckets(student_logits, topk_indices, temperature, rest=rest_logit is not None)
    per_token = divergence(log_p, log_q, loss, beta)
    return masked_mean(per_token, mask.bool()) * temperature**2


def next_token_targets(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, valid)`` ``[N, L − 1]``: the id after each position, and whether both
    positions are real tokens."""
    real = mask.bool()
    return ids[:, 1:].long(), real[:, 1:] & real[:, :-1]


def next_token_nll(
    logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per predicted position ``[N, L − 1]``: ``−log q(id_{j+1} | ..j)`` and its validity."""
    targets, valid = next_token_targets(ids, mask)
    log_q = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -log_q.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return nll, valid


def hard_term(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the data, a mean over the real (position, next) pairs."""
    nll, valid = next_token_nll(logits, ids, mask)
    return masked_mean(nll, valid)


def sequence_loss(
    student_logits: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    topk_logits: torch.Tensor,
    topk_indices: torch.Tensor,
    rest_logit: torch.Tensor | None,
    *,
    loss: str,
    temperature: float,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(alpha · hard + (1 − alpha) · soft, soft, hard)``."""
    soft = soft_term(
        student_logits,
        topk_logits,
        topk_indices,
        rest_logit,
        mask,
        loss=loss,
        temperature=temperature,
        beta=beta,
    )
    hard = hard_term(student_logits, ids, mask)
    return alpha * hard + (1.0 - alpha) * soft, soft, hard
