"""The benchmarks' loss and augmentation options: only distilled jobs get them."""

from __future__ import annotations

import argparse

from bench import _objectives as objective


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    objective.add_objective_args(parser)
    return parser.parse_args(list(argv))


def test_distilled_jobs_get_the_loss_and_augmentation_hard_label_jobs_stay_plain() -> None:
    shift = '{"shift": 2}'
    args = _args("--loss", "kd_jacobian", "--jacobian-weight", "0.5", "--augmentation", shift)
    assert objective.distillation(args, 4.0, 0.1) == {
        "temperature": 4.0,
        "alpha": 0.1,
        "loss": "kd_jacobian",
        "jacobian_weight": 0.5,
    }
    assert objective.distillation(args, 1.0, 1.0) == {"temperature": 1.0, "alpha": 1.0}
    assert objective.augmentation(args, 0.1) == {"augmentation": {"shift": 2}}
    assert objective.augmentation(args, 1.0) == {}
    assert objective.needs_images(args)


def test_the_defaults_change_nothing() -> None:
    args = _args()
    assert objective.distillation(args, 4.0, 0.1) == {"temperature": 4.0, "alpha": 0.1}
    assert objective.augmentation(args, 0.1) == {}
    assert not objective.needs_images(args)
