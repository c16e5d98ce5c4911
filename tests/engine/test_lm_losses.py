"""The sequence losses against references computed by hand, on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from engine.lm import topk_of
from engine.lm_losses import hard_term, sequence_loss, soft_term

T = 2.0
TEACHER = [2.0, 1.0, 0.5, -1.0]  # one position's logits over a vocabulary of 4
STUDENT = [0.3, -0.2, 1.0, 0.1]


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def buckets_by_hand() -> tuple[list[float], list[float]]:
    """Top 2 of the teacher (ids 0 and 1) and the rest, at T, both sides."""
    rest_logit = math.log((math.exp(0.5) + math.exp(-1.0)) / 2)
    # The rest bucket holds the other two ids, each at rest_logit.
    p = softmax([2.0 / T, 1.0 / T, math.log(2) + rest_logit / T])
    q_full = softmax([v / T for v in STUDENT])
    q = [q_full[0], q_full[1], q_full[2] + q_full[3]]
    return p, q


def stored(k: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Two positions: the real one, and padding holding other numbers (never taught)."""
    z = torch.tensor([[TEACHER, [5.0, -3.0, 0.0, 1.0]]])
    return topk_of(z, k)


def student() -> torch.Tensor:
    return torch.tensor([[STUDENT, [9.0, 0.0, 0.0, -9.0]]])


MASK = torch.tensor([[1, 0]])


@pytest.mark.parametrize(
    ("loss", "reference"),
    [
        ("kd", lambda p, q: kl(p, q)),
        ("reverse_kl", lambda p, q: kl(q, p)),
        (
            "jsd",
            lambda p, q: (
                0.3 * kl(p, [0.3 * a + 0.7 * b for a, b in zip(p, q, strict=True)])
                + 0.7 * kl(q, [0.3 * a + 0.7 * b for a, b in zip(p, q, strict=True)])
            ),
        ),
    ],
)
def test_soft_terms_match_the_hand_computed_divergence(loss: str, reference: object) -> None:
    vals, ids, rest = stored()
    got = soft_term(student(), vals, ids, rest, MASK, loss=loss, temperature=T, beta=0.3)
    p, q = buckets_by_hand()
    expected = T**2 * reference(p, q)  # type: ignore[operator]
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(got) > 0


def test_the_rest_bucket_keeps_the_exact_mass_at_t1() -> None:
    """At T = 1, the teacher's buckets are its exact top-k probabilities and remaining mass."""
    vals, ids, rest = stored()
    from engine.lm_losses import teacher_buckets

    got = teacher_buckets(vals[0, 0], rest[0, 0] if rest is not None else None, 4, 1.0).exp()
    p = softmax(TEACHER)
    assert got.tolist() == pytest.approx([p[0], p[1], p[2] + p[3]], rel=1e-6)


def test_a_full_vocabulary_has_no_rest_bucket() -> None:
    vals, ids, rest = stored(k=4)
    assert rest is None
    got = soft_term(student(), vals, ids, None, MASK, loss="kd", temperature=T, beta=0.5)
    expected = T**2 * kl(softmax([v / T for v in TEACHER]), softmax([v / T for v in STUDENT]))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_padding_changes_nothing() -> None:
    vals, ids, rest = stored()
    a = soft_term(student(), vals, ids, rest, MASK, loss="kd", temperature=T, beta=0.5)
    other = student()
    other[0, 1] = torch.tensor([-4.0, 7.0, 2.0, 2.0])
    b = soft_term(other, vals, ids, rest, MASK, loss="kd", temperature=T, beta=0.5)
    assert float(a) == float(b)


def test_the_hard_term_is_next_token_cross_entropy_over_real_pairs() -> None:
    logits = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    ids = torch.tensor([[1, 2, 0]])
    mask = torch.tensor([[1, 1, 0]])  # the third position is padding
    # Only (position 0 -> id 2) is a real pair: position 1's next token is padding.
    expected = -math.log(softmax([0.0, 1.0, 2.0])[2])
    assert float(hard_term(logits, ids, mask)) == pytest.approx(expected, rel=1e-6)
    both = torch.tensor([[1, 1, 1]])
    expected_both = (expected - math.log(softmax([3.0, 0.0, 0.0])[0])) / 2
    assert float(hard_term(logits, torch.tensor([[1, 2, 0]]), both)) == pytest.approx(
        expected_both, rel=1e-6
    )


def test_alpha_mixes_the_two_terms() -> None:
    vals, ids, rest = stored()
    x = student()
    ids_data = torch.tensor([[3, 1]])
    mask = torch.tensor([[1, 1]])
    loss, soft, hard = sequence_loss(
        x, ids_data, mask, vals, ids, rest, loss="kd", temperature=T, alpha=0.25, beta=0.5
    )
    assert float(loss) == pytest.approx(0.25 * float(hard) + 0.75 * float(soft), rel=1e-6)
    assert float(hard) == pytest.approx(-math.log(softmax(STUDENT)[1]), rel=1e-6)
