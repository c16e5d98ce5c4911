"""kd_jacobian: input gradients against finite differences, the derivative term by hand,
its second derivative by gradcheck, and the objective inside the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

from core.spec import AugmentationSpec
from engine import trainer
from engine.augment import Augment
from engine.errors import Stopped, UserError
from engine.jacobian import JacobianMatching, projections, teacher_scores
from engine.losses import jacobian_loss, projected_input_gradient
from engine.trainer import TrainConfig, train
from tests.engine.helpers import ModuleTeacher

CPU = torch.device("cpu")
T = 2.0


def _f64_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _softened(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.softmax(model(x) / T, dim=-1)


def test_projected_input_gradient_matches_central_differences() -> None:
    model = _f64_model(0)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    v = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1)
    got = projected_input_gradient(_softened(model, x), x, v, create_graph=False)
    h, expected = 1e-6, torch.zeros_like(got)
    with torch.no_grad():
        for j in range(5):
            e = torch.zeros(5, dtype=torch.float64)
            e[j] = h
            up = (_softened(model, x + e) * v).sum(1)
            down = (_softened(model, x - e) * v).sum(1)
            expected[:, j] = (up - down) / (2 * h)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_jacobian_loss_compares_directions_per_sample() -> None:
    teacher = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    # Sample 0: same direction, 10 x longer (0). Sample 1: orthogonal, |(0,1)-(1,0)|² = 2.
    student = torch.tensor([[30.0, 40.0], [0.0, 5.0]])
    assert jacobian_loss(student, teacher).item() == pytest.approx((0.0 + 2.0) / 2)
    assert jacobian_loss(-teacher, teacher).item() == pytest.approx(4.0)


def test_the_derivative_term_trains_the_weights_with_exact_second_derivatives() -> None:
    """gradcheck compares autograd's double backward with finite differences in float64."""
    model = _f64_model(1)
    x = torch.randn(3, 5, dtype=torch.float64)
    v = F.normalize(torch.randn(3, 3, dtype=torch.float64), dim=1)
    teacher_grad = torch.randn(3, 5, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]

    def term(*params: torch.Tensor) -> torch.Tensor:
        xi = x.clone().requires_grad_(True)
        out = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (xi,))
        probs = F.softmax(out / T, dim=-1)
        grad = projected_input_gradient(probs, xi, v, create_graph=True)
        return jacobian_loss(grad, teacher_grad)

    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    assert torch.autograd.gradcheck(term, params, eps=1e-6, atol=1e-6)


def test_projections_are_unit_vectors_fixed_by_seed_epoch_and_batch() -> None:
    v = projections(3, 1, 2, rows=8, classes=10)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(8))
    assert torch.equal(v, projections(3, 1, 2, rows=8, classes=10))
    assert not torch.equal(v, projections(3, 1, 3, rows=8, classes=10))


def test_an_onnx_teacher_is_refused_naming_the_loss() -> None:
    onnx = ModuleTeacher(nn.Linear(6, 4), 4, [None, 6], format="onnx")
    with pytest.raises(UserError, match="distillation.loss"):
        JacobianMatching([onnx], T, 0.1, 1.0, seed=0)


def test_the_teacher_side_is_the_teachers_softened_output_and_its_gradient() -> None:
    teacher_net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
    objective = JacobianMatching([ModuleTeacher(teacher_net, 4, [None, 6])], T, 0.1, 1.0, 0)
    x, v = torch.randn(5, 6), F.normalize(torch.randn(5, 4), dim=1)
    probs, grad = objective.teacher_side(x, v)
    xi = x.clone().requires_grad_(True)
    expected = projected_input_gradient(_softened(teacher_net, xi), xi, v, create_graph=False)
    torch.testing.assert_close(probs, _softened(teacher_net, x))
    torch.testing.assert_close(grad, expected)
    assert not any(p.requires_grad for p in teacher_net.parameters())


class _FixedBatch(nn.Module):
    """A program exported for batches of exactly 4 rows."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x) == 4, len(x)
        return self.net(x)


def test_a_teacher_exported_for_a_fixed_batch_gets_padded_chunks_with_gradients() -> None:
    fixed = _FixedBatch()
    teacher = ModuleTeacher(fixed, 4, [4, 6])
    teacher.static_batch = 4  # type: ignore[attr-defined]
    x = torch.randn(6, 6, requires_grad=True)
    scores = teacher_scores(teacher, x)
    torch.testing.assert_close(scores, fixed.net(x))
    (grad,) = torch.autograd.grad(scores.sum(), x)
    torch.testing.assert_close(grad, fixed.net.weight.sum(0).expand(6, 6))


# --- inside the trainer -------------------------------------------------------------------


def _teacher() -> ModuleTeacher:
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    return ModuleTeacher(net, 4, [None, 6])


def _config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        epochs=3,
        batch_size=16,
        learning_rate=1e-2,
        weight_decay=0.0,
        warmup_fraction=0.1,
        temperature=T,
        alpha=0.1,
        seed=3,
        checkpoint_every=4,
        loss="kd_jacobian",
    )
    return TrainConfig(**(base | overrides))


def _fit(tmp: Path, cfg: TrainConfig, weight: float = 1.0, **kwargs: Any) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(1))
    objective = JacobianMatching([_teacher()], T, cfg.alpha, weight, cfg.seed)
    train(
        model,
        x,
        None,
        lambda idx, xb: pytest.fail("kd_jacobian runs its own teacher"),
        cfg,
        device=CPU,
        workdir=tmp,
        fingerprint="job",
        jacobian=objective,
        **kwargs,
    )
    return model


def _derivative_gap(model: nn.Module) -> float:
    x = torch.randn(256, 6, generator=torch.Generator().manual_seed(9))
    objective = JacobianMatching([_teacher()], T, 0.1, 1.0, 0)
    v = projections(0, 0, 0, 256, 4)
    _, teacher_grad = objective.teacher_side(x, v)
    xi = x.clone().requires_grad_(True)
    student_grad = projected_input_gradient(_softened(model, xi), xi, v, create_graph=False)
    return float(jacobian_loss(student_grad, teacher_grad))


def test_the_derivative_term_brings_the_students_gradients_to_the_teachers(
    tmp_path: Path,
) -> None:
    plain = _derivative_gap(_fit(tmp_path / "w0", _config(epochs=15), weight=0.0))
    matched = _derivative_gap(_fit(tmp_path / "w1", _config(epochs=15), weight=1.0))
    assert matched < 0.7 * plain


def test_a_resumed_kd_jacobian_run_with_augmentation_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    augment = Augment(AugmentationSpec(mixup=0.4, noise=0.1), seed=3, num_classes=4)
    straight = save(_fit(tmp_path / "straight", _config(), augment=augment).state_dict())
    monkeypatch.setattr(trainer, "STOP_CHECK_EVERY_S", 0.0)
    calls = {"n": 0}

    def stop_once() -> bool:
        calls["n"] += 1
        return calls["n"] == 7

    with pytest.raises(Stopped):
        _fit(tmp_path / "resumed", _config(), augment=augment, should_stop=stop_once)
    resumed = save(_fit(tmp_path / "resumed", _config(), augment=augment).state_dict())
    assert resumed == straight


def test_kd_jacobian_without_its_objective_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kd_jacobian"):
        train(
            nn.Linear(6, 4),
            torch.randn(8, 6),
            None,
            lambda idx, xb: torch.full((len(idx), 4), 0.25),
            _config(),
            device=CPU,
            workdir=tmp_path,
            fingerprint="job",
        )
