"""``distillation.loss = "kd_jacobian"``: soft targets plus matching derivatives.

Sobolev-style distillation (Czarnecki et al. 2017; Srinivas & Fleuret 2018): besides the
teacher's softened outputs, the student learns how they change with the input. For each
sample, a random unit vector ``v`` of the output space picks one direction of the softened
output ``p_T(x) = softmax(f(x)/T)``; the student's input gradient ``∇_x ⟨v, p_T(x)⟩``
should point where the teacher's does:

    loss = alpha · CE(y, s) + (1 − alpha) · T² · KL(p_t ‖ p_s) + w · jacobian_loss(g_s, g_t)

(without labels the first term is dropped and the KL term has weight 1, as in ``kd_loss``).
The teacher runs online on every batch, differentiably: only torch programs (a ``.pt2``
teacher) have input gradients; ONNX Runtime gives none. The projections are drawn from a
generator seeded with (seed, epoch, batch), so a resumed run draws the same ones.

Numerics: the student's forward runs in fp32, never under autocast; the derivative term
differentiates the student twice, and a second derivative in bf16 keeps two or three
significant digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ErrorCode
from engine.augment import batch_rng
from engine.errors import UserError
from engine.losses import (
    combine_kd,
    jacobian_loss,
    kd_terms,
    projected_input_gradient,
    soft_targets,
)
from engine.soft_labels import TeacherLike

_STREAM = 0x4A_61_63  # apart from the augmentation's draws for the same batch

# (loss, soft term, hard term or None, derivative term)
Terms = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]


def projections(seed: int, epoch: int, batch: int, rows: int, classes: int) -> torch.Tensor:
    """One random unit vector of the output space per sample, ``[rows, classes]`` float32:
    Gaussian, then normalised (uniform on the sphere)."""
    draws = batch_rng(seed, epoch, batch, _STREAM).standard_normal((rows, classes))
    return F.normalize(torch.from_numpy(draws).float(), dim=1)


def teacher_scores(teacher: TeacherLike, x: torch.Tensor) -> torch.Tensor:
    """The teacher's scores with autograd on (unlike ``soft_labels.teacher_logits``). A
    program exported with a fixed batch size gets chunks of exactly that size, zero-padded."""
    module = teacher.module
    if module is None:
        raise UserError(ErrorCode.BAD_SPEC, _NEEDS_TORCH)
    fixed = getattr(teacher, "static_batch", None)
    if fixed is None or fixed == len(x):
        out: torch.Tensor = module(x)
        return out.float()
    parts = []
    for part in torch.split(x, fixed):
        rows = len(part)
        padding = part.new_zeros((fixed - rows, *part.shape[1:]))
        parts.append(module(torch.cat([part, padding]))[:rows].float())
    return torch.cat(parts)


_NEEDS_TORCH = (
    "distillation.loss: kd_jacobian needs the teachers' input gradients; only .pt2 "
    "(torch.export) teachers give them"
)


@dataclass
class JacobianMatching:
    """The whole kd_jacobian objective for one batch, teacher side included."""

    teachers: Sequence[TeacherLike]
    temperature: float
    alpha: float
    weight: float
    seed: int

    def __post_init__(self) -> None:
        for teacher in self.teachers:
            if teacher.format != "torch_export" or teacher.module is None:
                raise UserError(ErrorCode.BAD_SPEC, f"{_NEEDS_TORCH} (got {teacher.format})")
            # Gradients are taken with respect to the inputs only: no graph for the weights.
            teacher.module.requires_grad_(False)

    def teacher_side(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teachers' (mean) softened distribution and its projected input gradient."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = torch.stack([teacher_scores(t, x) for t in self.teachers])
            probs = soft_targets(scores, self.temperature)
            grad = projected_input_gradient(probs, x, v, create_graph=False)
        return probs.detach(), grad.detach()

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        epoch: int,
        batch: int,
    ) -> Terms:
        classes = self.teachers[0].num_classes
        v = projections(self.seed, epoch, batch, len(x), classes).to(x.device)
        target, teacher_grad = self.teacher_side(x, v)
        x = x.detach().requires_grad_(True)
        logits = model(x)
        probs = F.softmax(logits.float() / self.temperature, dim=-1)
        student_grad = projected_input_gradient(probs, x, v, create_graph=True)
        soft, hard = kd_terms(logits, target, labels, temperature=self.temperature)
        derivative = jacobian_loss(student_grad, teacher_grad)
        loss = combine_kd(soft, hard, self.alpha) + self.weight * derivative
        return loss, soft, hard, derivative
