"""Agreement, KL and accuracy on logits whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from engine.evaluate import agreement, eval_metrics, mean_kl, teacher_probs


def test_agreement_counts_matching_argmax() -> None:
    teacher = teacher_probs(torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]))
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.2, 1.0], [0.0, 0.5, 1.0]])
    assert agreement(teacher, student, 1) == pytest.approx(2 / 3)
    assert agreement(teacher, student, 2) == pytest.approx(1.0)


def test_mean_kl_matches_hand_computation() -> None:
    t, s = [1.0, 0.0], [0.0, 0.0]
    p = [math.exp(1) / (math.exp(1) + 1), 1 / (math.exp(1) + 1)]
    by_hand = sum(a * math.log(a / 0.5) for a in p)
    assert mean_kl(teacher_probs(torch.tensor([t])), torch.tensor([s])) == pytest.approx(by_hand)


def test_ensemble_teacher_is_mean_probability_and_accuracy_uses_labels() -> None:
    teachers = torch.tensor([[[4.0, 0.0]], [[0.0, 1.0]]])  # mean probs favour class 0
    metrics = eval_metrics(teachers, torch.tensor([[0.0, 2.0]]), torch.tensor([0]))
    assert metrics["teacher_accuracy"] == 1.0
    assert metrics["student_accuracy"] == 0.0
    assert metrics["agreement_top1"] == 0.0
    assert metrics["agreement_top5"] == 1.0
    assert metrics["eval_samples"] == 1


def test_without_labels_accuracies_are_none() -> None:
    metrics = eval_metrics(torch.zeros(3, 4), torch.zeros(3, 4), None)
    assert metrics["teacher_accuracy"] is None and metrics["student_accuracy"] is None


def test_tied_student_logits_count_the_first_maximum_as_numpy_does() -> None:
    # An int8 student's logits are quantized: exact ties happen, and a user's np.argmax
    # takes the first of them.
    student = torch.tensor([[0.5, 2.0, 2.0, 1.0]] * 4 + [[3.0, 3.0, 3.0, 3.0]] * 4)
    teacher = torch.eye(4)[torch.tensor([1, 1, 2, 2, 0, 0, 3, 3])]
    expected = float((student.numpy().argmax(1) == teacher.numpy().argmax(1)).mean())
    assert agreement(teacher, student) == expected == 0.5
