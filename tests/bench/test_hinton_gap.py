"""The Hinton table's "gap recovered": only where the hard-label twin trails the teacher."""

from __future__ import annotations

from bench.hinton_mnist import gap


def test_the_published_numbers_recover_91_percent() -> None:
    assert gap(hard=146, distilled=74, teacher=67) == "91 %"


def test_a_twin_that_beats_the_teacher_leaves_no_gap_to_recover() -> None:
    # The audit's rerun: twin 102, distilled 111, teacher 120 printed "50 %".
    assert gap(hard=102, distilled=111, teacher=120) == "no gap (twin -18 vs teacher)"
    assert gap(hard=120, distilled=100, teacher=120).startswith("no gap")


def test_a_distilled_student_worse_than_its_twin_recovers_a_negative_share() -> None:
    assert gap(hard=140, distilled=150, teacher=120) == "-50 %"
