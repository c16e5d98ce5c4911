"""What a teacher's class-score output holds: the names shared by the API and the worker."""

from __future__ import annotations

from typing import Literal, get_args

OutputKind = Literal["logits", "probabilities", "log_probabilities"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)
# The upload's `output_kind`: one of the kinds, or "auto" to let the validation dry run decide.
RequestedOutputKind = Literal["auto", "logits", "probabilities", "log_probabilities"]
REQUESTED_OUTPUT_KINDS: tuple[str, ...] = get_args(RequestedOutputKind)
MAX_OUTPUT_NAME = 200
