"""Hinton's KD loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from engine.losses import kd_loss, soft_loss, soft_targets


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def test_soft_loss_is_t_squared_kl_averaged_per_sample() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    temperature = 2.0
    by_hand = (
        sum(
            _kl(_softmax(ti, temperature), _softmax(si, temperature))
            for si, ti in zip(s, t, strict=True)
        )
        / 2
        * temperature**2
    )
    got = soft_loss(torch.tensor(s), soft_targets(torch.tensor(t), temperature), temperature)
    assert got.item() == pytest.approx(by_hand, rel=1e-6)


def test_kd_loss_mixes_hard_and_soft_terms_with_alpha() -> None:
    s, t, y = [[1.0, 2.0, 0.5]], [[2.0, 0.0, 1.0]], [2]
    temperature, alpha = 4.0, 0.3
    ce = -math.log(_softmax(s[0], 1.0)[2])
    soft = _kl(_softmax(t[0], temperature), _softmax(s[0], temperature)) * temperature**2
    got = kd_loss(
        torch.tensor(s),
        soft_targets(torch.tensor(t), temperature),
        torch.tensor(y),
        temperature=temperature,
        alpha=alpha,
    )
    assert got.item() == pytest.approx(alpha * ce + (1 - alpha) * soft, rel=1e-6)


def test_without_labels_only_the_soft_term_counts() -> None:
    s, t = torch.tensor([[0.3, -0.2]]), torch.tensor([[1.0, 0.0]])
    p = soft_targets(t, 3.0)
    got = kd_loss(s, p, None, temperature=3.0, alpha=0.9)
    assert got.item() == pytest.approx(soft_loss(s, p, 3.0).item())


def test_ensemble_target_is_mean_of_softened_probabilities() -> None:
    t = torch.tensor([[[3.0, 0.0]], [[0.0, 1.0]]])  # two teachers, one sample
    expected = [
        (a + b) / 2
        for a, b in zip(_softmax([3.0, 0.0], 2.0), _softmax([0.0, 1.0], 2.0), strict=True)
    ]
    assert soft_targets(t, 2.0)[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_identical_distributions_give_zero_and_zero_probabilities_no_nan() -> None:
    s = torch.tensor([[2.0, -1.0, 0.0]])
    assert soft_loss(s, soft_targets(s, 4.0), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.isfinite(soft_loss(s, p, 1.0))


def _soft_grad_norm(temperature: float, scaled: bool) -> float:
    generator = torch.Generator().manual_seed(0)
    s = torch.randn(32, 10, generator=generator).requires_grad_(True)
    t = torch.randn(32, 10, generator=generator)
    loss = soft_loss(s, soft_targets(t, temperature), temperature)
    if not scaled:
        loss = loss / temperature**2
    loss.backward()
    assert s.grad is not None
    return float(s.grad.norm())


def test_t_squared_keeps_soft_gradient_from_shrinking_as_t_grows() -> None:
    scaled = [_soft_grad_norm(t, scaled=True) for t in (2.0, 4.0, 8.0, 16.0)]
    bare = [_soft_grad_norm(t, scaled=False) for t in (2.0, 4.0, 8.0, 16.0)]
    # With T²: the gradient tends to a constant, (s − t)/C centred, for large T.
    for a, b in zip(scaled, scaled[1:], strict=False):
        assert b >= 0.8 * a
    # Without it, it falls like 1/T²: 64× from T = 2 to T = 16 (checks the test has teeth).
    assert bare[-1] < bare[0] / 30
