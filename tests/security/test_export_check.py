"""Finding: a finished job failed at export over a logit difference of 1.09e-4 that the
check measured against an absolute 1e-4, without knowing the logits' scale, and without
asking whether any prediction changed."""

from __future__ import annotations

import pytest
import torch

from engine.export import ExportError, check_logits


def test_the_reproduced_difference_does_not_fail_a_job() -> None:
    torch.manual_seed(0)
    expected = 12.0 * torch.randn(256, 10)  # logits at the scale a trained student reaches
    noise = torch.zeros_like(expected)
    noise[:, 3] = 1.09e-4  # the reported difference, on a class that is never near the top
    assert check_logits("onnx", expected + noise, expected) == pytest.approx(1.09e-4, rel=0.05)


def test_a_difference_that_changes_a_prediction_still_fails() -> None:
    expected = torch.tensor([[0.2, 0.1, -0.3]])
    with pytest.raises(ExportError, match="changes 1 of 1 predictions"):
        check_logits("onnx", expected + torch.tensor([[0.0, 0.2, 0.0]]), expected)
