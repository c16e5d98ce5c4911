"""The student architectures, described for the API (which cannot import torch).

``worker/distill/students/registry.py`` holds the builders; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ENTRIES: tuple[dict[str, Any], ...] = (
    {
        "name": "mlp",
        "description": "MLP over the flattened input: two hidden layers, each linear-BN-ReLU.",
        "input_ranks": [1, 2, 3],
        "knobs": {"hidden": "widths of the hidden layers, solved from size_ratio/max_parameters"},
    },
    {
        "name": "cnn",
        "description": "2-D CNN for images (C, H, W): conv3x3-BN-ReLU-maxpool stages, linear head.",
        "input_ranks": [3],
        "knobs": {"width": "channels of the first stage, solved from size_ratio/max_parameters"},
    },
    {
        "name": "cnn1d",
        "description": "1-D CNN for signals (C, L): conv5-BN-ReLU-maxpool stages, linear head.",
        "input_ranks": [2],
        "knobs": {"width": "channels of the first stage, solved from size_ratio/max_parameters"},
    },
)
AUTO_BY_RANK = {1: "mlp", 2: "cnn1d", 3: "cnn"}


def catalog() -> list[dict[str, Any]]:
    auto = {
        "name": "auto",
        "description": "Picks by input shape (vectors: mlp, (C, L): cnn1d, (C, H, W): cnn) and "
        "sizes the student to size_ratio x the teacher's parameters, or to max_parameters.",
        "input_ranks": sorted(AUTO_BY_RANK),
        "knobs": {"size_ratio": 0.1, "max_parameters": None},
    }
    return [auto, *(dict(e) for e in _ENTRIES)]


def fits_input(architecture: str, sample_shape: Sequence[int]) -> bool:
    if architecture == "auto":
        return len(sample_shape) >= 1
    for entry in _ENTRIES:
        if entry["name"] == architecture:
            return len(sample_shape) in entry["input_ranks"]
    return False
