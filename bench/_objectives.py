"""Shared by the quality benchmarks: the command-line options that pick the distillation loss
and the augmentation of the distilled jobs (``distillation.loss``, ``augmentation``). No
``main``: not a benchmark of its own."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_objective_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loss",
        choices=("kd", "kd_jacobian"),
        default="kd",
        help="distillation.loss of the distilled jobs (hard-label jobs stay plain)",
    )
    parser.add_argument(
        "--jacobian-weight", type=float, default=1.0, help="distillation.jacobian_weight"
    )
    parser.add_argument(
        "--augmentation",
        type=json.loads,
        default=None,
        help='the distilled jobs\' augmentation, as JSON: {"shift": 2, "noise": 0.1}',
    )
    parser.add_argument(
        "--augment-hard",
        action="store_true",
        help="the hard-label jobs get the same augmentation (a twin trained as long, on the "
        "same views, without the teacher)",
    )


def distillation(args: argparse.Namespace, temperature: float, alpha: float) -> dict[str, Any]:
    """The ``distillation`` section of a job; alpha = 1 (hard labels alone) stays plain kd."""
    section: dict[str, Any] = {"temperature": temperature, "alpha": alpha}
    if alpha < 1.0 and args.loss != "kd":
        section |= {"loss": args.loss, "jacobian_weight": args.jacobian_weight}
    return section


def augmentation(args: argparse.Namespace, alpha: float) -> dict[str, Any]:
    """``{"augmentation": ...}`` for a distilled job when asked (a hard-label job too with
    ``--augment-hard``), else nothing."""
    wanted = alpha < 1.0 or getattr(args, "augment_hard", False)
    return {"augmentation": args.augmentation} if args.augmentation and wanted else {}


def describe(args: argparse.Namespace) -> str:
    """One sentence for the tables: what the distilled jobs ran."""
    loss = f"kd_jacobian (weight {args.jacobian_weight:g})" if args.loss == "kd_jacobian" else "kd"
    aug = json.dumps(args.augmentation) if args.augmentation else "none"
    hard = "the same" if args.augment_hard and args.augmentation else "none"
    return f"Distilled jobs: loss {loss}, augmentation {aug}. Hard-label jobs: augmentation {hard}."


def name_suffix(args: argparse.Namespace) -> str:
    """The output folder's suffix for these options: none for plain kd, so runs with other
    losses or augmentation never overwrite it."""
    if args.loss == "kd" and not args.augmentation:
        return ""
    return "_objective" + ("_augment_hard" if args.augment_hard and args.augmentation else "")


def needs_images(args: argparse.Namespace) -> bool:
    """Shifts and flips need images, not flat vectors."""
    aug = args.augmentation or {}
    return bool(aug.get("shift") or aug.get("flip"))
