"""The student architectures, described for the API (which cannot import torch).

``engine/students/registry.py`` holds the builders; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IMAGE_MIN_SIDE = 16  # resnet and mobilenetv2: smaller images get the cnn
AUTO_IMAGE_SIDE = 28  # auto: images this large or larger get resnet or mobilenetv2

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
    {
        "name": "resnet",
        "description": "ResNet for images (C, H, W): residual stages of basic blocks (two "
        "conv3x3-BN, identity shortcut), widths w-2w-4w-8w, global average pool, linear head.",
        "input_ranks": [3],
        "min_side": IMAGE_MIN_SIDE,
        "knobs": {
            "width": "channels of the first stage, solved from size_ratio/max_parameters",
            "blocks": "basic blocks per stage (depth): 2, or 1 when 2 cannot be that small",
            "stages": "up to 4, set by the image size (the final map is 4-7 pixels)",
        },
    },
    {
        "name": "mobilenetv2",
        "description": "MobileNetV2 for images (C, H, W): inverted residuals (1x1 expansion, "
        "depthwise conv3x3, linear 1x1 bottleneck), the paper's 7 stages scaled by a width "
        "multiplier.",
        "input_ranks": [3],
        "min_side": IMAGE_MIN_SIDE,
        "knobs": {
            "width": "stem channels, solved from size_ratio/max_parameters; the width "
            "multiplier is width / 32",
            "depth": "at most this many blocks per stage: 4 (the paper's 17 blocks), else 2 or 1",
            "expansion": "hidden channels of a block / its input channels: 6",
            "downsamplings": "stride-2 steps, set by the image size (the final map is 4-7 pixels)",
        },
    },
    {
        "name": "text_cnn",
        "description": "Text CNN for token teachers (Kim 2014): an embedding (factorised when "
        "the vocabulary dominates), convolutions of widths 3, 4 and 5, masked max-pool over "
        "time, linear head.",
        "input_ranks": [],
        "input_kind": "tokens",
        "knobs": {
            "width": "embedding size and channels per filter width, solved from "
            "size_ratio/max_parameters",
            "factor": "rank of the factorised embedding (width / 4), 0 for a plain one",
        },
    },
    {
        "name": "transformer",
        "description": "Small transformer encoder for token teachers: an embedding with "
        "sinusoidal positions, 2 (or 1) pre-norm blocks of 4-head self-attention over the "
        "unmasked tokens, masked mean pool, linear head.",
        "input_ranks": [],
        "input_kind": "tokens",
        "knobs": {
            "width": "model width, solved from size_ratio/max_parameters",
            "layers": "2, or 1 when 2 cannot be that small",
            "factor": "rank of the factorised embedding (width / 4), 0 for a plain one",
        },
    },
    {
        "name": "gpt",
        "description": "Decoder-only transformer for language-model teachers: an embedding "
        "with sinusoidal positions, 2 (or 1) pre-norm blocks of causal 4-head self-attention, "
        "the output layer tied to the embedding; next-token logits over the teacher's "
        "vocabulary.",
        "input_ranks": [],
        "input_kind": "tokens",
        "knobs": {
            "width": "model width, solved from size_ratio/max_parameters",
            "layers": "2, or 1 when 2 cannot be that small",
            "factor": "rank of the factorised embedding (width / 4), 0 for a plain one",
        },
    },
)
TOKEN_ARCHITECTURES = ("text_cnn", "transformer")
LM_ARCHITECTURES = ("gpt",)  # students of language-model teachers
AUTO_BY_RANK = {1: "mlp", 2: "cnn1d", 3: "cnn"}


def catalog() -> list[dict[str, Any]]:
    auto = {
        "name": "auto",
        "description": "Picks by input shape and budget (vectors: mlp, (C, L): cnn1d, "
        f"(C, H, W): cnn; images of at least {AUTO_IMAGE_SIDE}x{AUTO_IMAGE_SIDE}: mobilenetv2 "
        "when the budget allows a width multiplier of 0.35 or more, else resnet) and sizes "
        "the student to size_ratio x the teacher's parameters, or to max_parameters.",
        "input_ranks": sorted(AUTO_BY_RANK),
        "knobs": {"size_ratio": 0.1, "max_parameters": None},
    }
    return [auto, *(dict(e) for e in _ENTRIES)]


def fits_input(architecture: str, sample_shape: Sequence[int]) -> bool:
    if architecture == "auto":
        return len(sample_shape) >= 1
    for entry in _ENTRIES:
        if entry["name"] == architecture:
            if len(sample_shape) not in entry["input_ranks"]:
                return False
            return min(sample_shape[-2:]) >= int(entry.get("min_side", 1))
    return False
