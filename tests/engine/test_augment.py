"""Augmentation: each transform by hand, seeded per (seed, epoch, batch), and the teacher
seeing exactly the batch the student sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from core.spec import AugmentationSpec
from engine.augment import (
    Augment,
    flip_images,
    make_augment,
    munge,
    nearest_neighbours,
    shift_images,
)
from engine.errors import UserError
from engine.trainer import TrainConfig, train


def test_shift_moves_each_image_and_repeats_the_edge() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    out = shift_images(x, torch.tensor([[1, 0], [0, -2]]))
    # Image 0 moves down one row (the top row repeats); image 1 left two columns.
    torch.testing.assert_close(out[0, 0, 1:], x[0, 0, :3])
    torch.testing.assert_close(out[0, 0, 0], x[0, 0, 0])
    torch.testing.assert_close(out[1, 0, :, :2], x[1, 0, :, 2:])
    torch.testing.assert_close(out[1, 0, :, 2], x[1, 0, :, 3])
    assert shift_images(x[:, 0], torch.tensor([[1, 0], [0, -2]])).shape == (2, 4, 4)


def test_flip_mirrors_only_the_picked_images() -> None:
    x = torch.randn(3, 2, 4, 5)
    out = flip_images(x, torch.tensor([True, False, True]))
    torch.testing.assert_close(out[0], x[0].flip(-1))
    torch.testing.assert_close(out[1], x[1])
    torch.testing.assert_close(out[2], x[2].flip(-1))


def test_mixup_mixes_inputs_and_labels_with_the_same_weights() -> None:
    # With labels 0..15, row i of the mixed labels names the samples row i was mixed from.
    x, y = torch.randn(16, 3), torch.arange(16)
    out, labels = Augment(AugmentationSpec(mixup=0.4), seed=0, num_classes=16)(
        x, y, epoch=0, batch=0
    )
    assert labels is not None
    torch.testing.assert_close(out, labels @ x)
    torch.testing.assert_close(labels.sum(1), torch.ones(16))
    # One lambda for the batch (a row mixed with itself has weight 1).
    weights = {round(float(w), 6) for w in labels[labels > 0]} - {1.0}
    assert len(weights) <= 2 and (len(weights) == 1 or sum(weights) == pytest.approx(1.0))


def test_the_same_seed_epoch_and_batch_give_the_same_bytes() -> None:
    spec = AugmentationSpec(shift=2, flip=True, mixup=0.2, noise=0.1)
    augment = Augment(spec, seed=5, num_classes=10)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    a, la = augment(x, y, epoch=2, batch=3)
    b, lb = augment(x, y, epoch=2, batch=3)
    c, _ = augment(x, y, epoch=2, batch=4)
    assert torch.equal(a, b) and la is not None and lb is not None and torch.equal(la, lb)
    assert not torch.equal(a, c) and not torch.equal(a, x)


def test_noise_has_the_asked_standard_deviation() -> None:
    x = torch.zeros(64, 100)
    out, labels = Augment(AugmentationSpec(noise=0.5), 0, 10)(x, None, epoch=0, batch=0)
    assert labels is None
    assert float(out.std()) == pytest.approx(0.5, rel=0.05)


def test_nothing_asked_means_no_augmentation() -> None:
    assert make_augment(AugmentationSpec(), [64], seed=0, classes=10) is None


@pytest.mark.parametrize(
    ("spec", "shape", "said"),
    [
        (AugmentationSpec(shift=2), [64], "augmentation.shift"),
        (AugmentationSpec(flip=True), [64], "augmentation.flip"),
        (AugmentationSpec(shift=8), [1, 8, 8], "augmentation.shift: 8 pixels"),
        (AugmentationSpec(munge=0.5), [1, 8, 8], "augmentation.munge: needs tabular"),
        (AugmentationSpec(munge=0.5), [8, 8], "augmentation.munge: needs tabular"),
    ],
)
def test_shifts_flips_need_images_and_munge_rows(
    spec: AugmentationSpec, shape: list[int], said: str
) -> None:
    with pytest.raises(UserError, match=said):
        make_augment(spec, shape, seed=0, classes=10)


def test_nearest_neighbour_is_the_closest_other_row() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [5.0, 6.5]])
    assert nearest_neighbours(x).tolist() == [1, 0, 3, 2]


def test_munge_takes_the_neighbours_value_perturbed_by_the_gap_over_s() -> None:
    x = torch.tensor([[0.0, 10.0], [1.0, 12.0], [9.0, 0.0]])
    swap = torch.tensor([[True, False], [True, True], [False, False]])
    noise = torch.tensor([[1.0, 1.0], [0.0, -2.0], [1.0, 1.0]])
    out = munge(x, swap, noise, scale=10.0)
    # Row 0's neighbour is row 1: attribute 0 becomes 1 + 1 · |0 − 1| / 10; attribute 1 stays.
    torch.testing.assert_close(out[0], torch.tensor([1.1, 10.0]))
    # Row 1's neighbour is row 0: 0 + 0, and 10 − 2 · |12 − 10| / 10.
    torch.testing.assert_close(out[1], torch.tensor([0.0, 9.6]))
    torch.testing.assert_close(out[2], x[2])  # nothing swapped


def test_munge_appends_synthetic_rows_near_their_neighbours_and_keeps_the_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    augment = Augment(AugmentationSpec(munge=0.5), seed=3, num_classes=3)
    out, labels = augment(x, y, epoch=1, batch=2)
    assert out.shape == (128, 5) and torch.equal(out[:64], x)
    assert labels is not None and torch.equal(labels, y)  # the originals' only
    synthetic, neighbour = out[64:], x[nearest_neighbours(x)]
    swapped = ~torch.isclose(synthetic, x)
    assert 0.4 < float(swapped.float().mean()) < 0.6  # p = 0.5
    # A swapped value lies within a few (gap / s) of the neighbour's.
    gap = (x - neighbour).abs()
    assert bool(((synthetic - neighbour).abs() <= 5 * gap / 10 + 1e-6)[swapped].all())
    again, _ = augment(x, y, epoch=1, batch=2)
    other, _ = augment(x, y, epoch=1, batch=3)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_the_hard_label_term_counts_only_the_original_rows() -> None:
    from engine.losses import kd_terms

    logits, y = torch.randn(8, 3), torch.randint(0, 3, (4,))
    probs = torch.full((8, 3), 1 / 3)
    _, hard = kd_terms(logits, probs, y, temperature=2.0)
    assert hard is not None
    torch.testing.assert_close(hard, torch.nn.functional.cross_entropy(logits[:4], y))


def test_the_teacher_sees_exactly_the_students_augmented_batch(tmp_path: Path) -> None:
    spec = AugmentationSpec(shift=1, flip=True, noise=0.05)
    augment = Augment(spec, seed=2, num_classes=3)
    x = torch.randn(40, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    student_inputs: list[torch.Tensor] = []

    def teacher(idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        seen.append((idx.clone(), xb.clone()))
        return torch.full((len(idx), 3), 1 / 3)

    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 3))
    model.register_forward_pre_hook(lambda m, args: student_inputs.append(args[0].clone()))
    cfg = TrainConfig(1, 16, 1e-2, 0.0, 0.0, 2.0, 0.0, seed=2, checkpoint_every=0)
    cpu = torch.device("cpu")
    train(
        model,
        x,
        None,
        teacher,
        cfg,
        device=cpu,
        workdir=tmp_path,
        fingerprint="job",
        augment=augment,
    )
    assert len(seen) == 3
    for batch, (idx, xb) in enumerate(seen):
        expected, _ = augment(x[idx], None, epoch=0, batch=batch)
        assert torch.equal(xb, expected)
        assert torch.equal(student_inputs[batch], expected)
