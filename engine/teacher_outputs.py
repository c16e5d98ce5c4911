"""Which output of a teacher holds its class scores, what kind of scores they are, and how
they become the one thing the engine works on: float32 *scores* ``[N, C]`` whose softmax is
the teacher's distribution.

Other tools export classifiers with several outputs and in several conventions: skl2onnx
emits an int64 ``label`` ``[N]`` beside ``probabilities`` (by default a ZipMap,
``seq(map(int64, float))``), Keras heads end in softmax, Hugging Face-style exports return a
dict with ``logits``. The rules, applied to what the validation dry run returned:

- output: ``output_name`` when given; else the output named ``logits``; else the one float
  ``[N, C ≥ 2]`` output. Anything else is refused with the outputs listed.
- kind: a ZipMap holds probabilities; else rows ≥ 0 that sum to 1 are probabilities, rows
  whose logsumexp is 0 are log-probabilities, the rest logits. ``output_kind`` overrides.
- scores: logits as they are; probabilities become ``log p`` and log-probabilities stay,
  both floored at ``log(PROB_FLOOR)``. ``softmax(log p) = p``, so the temperature then
  softens log-probabilities exactly as it softens logits, and argmax (accuracy) is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import ErrorCode
from core.outputs import OUTPUT_KINDS
from engine.errors import UserError

# A class a random forest never votes for has p = 0 exactly, and log 0 = -inf, which the
# dry run refuses and arithmetic downstream turns into NaN (inf - inf). Below about 1e-7 a
# float32 probability says nothing anyway: that is its rounding step near 1, so the row's
# other entries are only known to that precision. At log(1e-7) ≈ -16.1 a "never" class looks
# like one a confident logit teacher is 16 nats against: finite, exact enough in the fp16
# soft-label file, and reachable by a student's logits.
PROB_FLOOR = 1e-7
LOG_PROB_FLOOR = math.log(PROB_FLOOR)
# float32 sums of a softmax row are off by ~1e-6; a float16 head by ~1e-3.
_SUM_TOLERANCE = 2e-3


@dataclass(frozen=True)
class OutputInfo:
    """One output as the dry run saw it. ``shape`` has None for the batch dimension."""

    name: str
    dtype: str
    shape: list[int | None] | None
    scores: bool = False  # a float [N, C ≥ 2] tensor: a candidate for the class scores
    zipmap: bool = False

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}

    def label(self) -> str:
        dims = self.shape
        shape = "?" if dims is None else ",".join("N" if d is None else str(d) for d in dims)
        return f"{self.name} {self.dtype} [{shape}]"


@dataclass(frozen=True)
class Choice:
    name: str
    kind: str
    reason: str


def flatten_outputs(value: Any, prefix: str = "") -> dict[str, Any]:
    """A module's output pytree as ``{name: leaf}``: dict keys, tuple indexes (or named-tuple
    fields), joined with dots; a bare tensor is ``output``."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        items = zip(value._fields, value, strict=True)
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return {prefix or "output": value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten_outputs(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def as_tensor(value: Any) -> torch.Tensor | None:
    """A numeric tensor from a torch tensor, a numeric array or a ZipMap list; else None."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return torch.from_numpy(np.ascontiguousarray(value))
    if _is_zipmap(value):
        return torch.from_numpy(zipmap_array(value))
    return None


def _is_zipmap(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], Mapping)


def zipmap_array(rows: list[Mapping[Any, Any]]) -> np.ndarray:
    """ZipMap's ``[{label: p, ...}, ...]`` as float32 ``[N, C]``, columns in sorted label
    order: the order of the classifier's ``classes_`` and of its ``zipmap=False`` output."""
    keys = sorted(rows[0])
    try:
        return np.array([[row[key] for key in keys] for row in rows], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            ErrorCode.BAD_OUTPUT,
            "The teacher's ZipMap rows do not share one set of numeric classes.",
        ) from exc


def describe(name: str, value: Any, rows: int, declared: str | None = None) -> OutputInfo:
    """What one dry-run output is: its dtype, its shape and whether it can be class scores."""
    if _is_zipmap(value):
        dtype = declared or "seq(map(int64,float))"
        scores = len(value) == rows and len(value[0]) >= 2
        return OutputInfo(name, dtype, [None, len(value[0])], scores=scores, zipmap=True)
    tensor = as_tensor(value)
    if tensor is None:
        shape = list(value.shape) if isinstance(value, np.ndarray) else None
        return OutputInfo(name, declared or type(value).__name__, _batch_first(shape, rows))
    shape = _batch_first(list(tensor.shape), rows)
    scores = (
        tensor.is_floating_point()
        and tensor.ndim == 2
        and tensor.shape[0] == rows
        and tensor.shape[1] >= 2
    )
    return OutputInfo(name, str(tensor.dtype).removeprefix("torch."), shape, scores=scores)


def _batch_first(shape: list[int] | None, rows: int) -> list[int | None] | None:
    if shape is None or not shape:
        return None if shape is None else []
    return [None if shape[0] == rows else shape[0], *shape[1:]]


def pick_output(outputs: list[OutputInfo], requested: str | None) -> tuple[OutputInfo, str]:
    """The output that holds the class scores and a sentence saying why it was chosen."""
    listing = "; ".join(info.label() for info in outputs)
    candidates = [info for info in outputs if info.scores]
    if requested:
        found = next((info for info in outputs if info.name == requested), None)
        if found is None:
            raise UserError(
                ErrorCode.BAD_OUTPUT_NAME,
                f"output_name {requested!r} is not an output of the teacher; it has: {listing}.",
            )
        if not found.scores:
            raise UserError(
                ErrorCode.BAD_OUTPUT_NAME,
                f"output_name {requested!r} is {found.label()}, not float [N, classes] scores; "
                f"the teacher has: {listing}.",
            )
        return found, f"output_name {requested!r} was given at upload"
    ignored = [info.label() for info in outputs if not info.scores]
    aside = f" (ignored: {', '.join(ignored)})" if ignored else ""
    named = [info for info in candidates if info.name == "logits"]
    if named:
        return named[0], f"the output named 'logits'{aside}"
    if len(candidates) == 1:
        return candidates[0], f"the only float [N, classes] output{aside}"
    if not candidates:
        raise UserError(
            ErrorCode.BAD_OUTPUT,
            f"The teacher has no float [N, classes] output (at least 2 classes); it returned: "
            f"{listing}. Export a classifier whose output is one score per class.",
        )
    floats = ", ".join(info.label().replace(" float32 ", " ") for info in candidates)
    raise UserError(
        ErrorCode.AMBIGUOUS_OUTPUT,
        f"the teacher has {len(candidates)} float outputs: {floats}; pass output_name "
        "(and output_kind if auto-detection should not decide) when uploading it.",
    )


def detect_kind(info: OutputInfo, out: torch.Tensor, requested: str) -> tuple[str, str]:
    """``(kind, why)`` from the dry run's rows of the chosen output, or the upload's word."""
    looks = _looks_like(out)
    if requested != "auto":
        _check_requested(info, out, requested)
        return requested, f"output_kind {requested!r} was given at upload"
    if info.zipmap and bool((out >= -1e-6).all()):
        return "probabilities", "a ZipMap output holds class probabilities"
    if looks == "probabilities":
        return looks, "on the dry run every row was >= 0 and summed to 1"
    if looks == "log_probabilities":
        return looks, "on the dry run every row was <= 0 with logsumexp 0"
    return "logits", "on the dry run its rows were neither probabilities nor log-probabilities"


def _looks_like(out: torch.Tensor) -> str:
    z = out.double()
    if bool((z >= -1e-6).all()) and bool(((z.sum(-1) - 1).abs() <= _SUM_TOLERANCE).all()):
        return "probabilities"
    lse = z.logsumexp(-1)
    if bool((z <= 1e-6).all()) and bool((lse.abs() <= _SUM_TOLERANCE).all()):
        return "log_probabilities"
    return "logits"


def _check_requested(info: OutputInfo, out: torch.Tensor, requested: str) -> None:
    if requested not in OUTPUT_KINDS:
        raise UserError(
            ErrorCode.BAD_OUTPUT_KIND, f"output_kind must be auto or one of {OUTPUT_KINDS}."
        )
    z = out.double()
    if requested == "probabilities" and bool((z < -1e-6).any()):
        raise UserError(
            ErrorCode.BAD_OUTPUT_KIND,
            f"output_kind is probabilities but {info.name!r} gave negative values on the dry "
            "run; pass output_kind=logits (or auto).",
        )
    if requested == "log_probabilities" and bool((z > 1e-6).any()):
        raise UserError(
            ErrorCode.BAD_OUTPUT_KIND,
            f"output_kind is log_probabilities but {info.name!r} gave positive values on the "
            "dry run; pass output_kind=logits (or auto).",
        )


def to_scores(out: torch.Tensor, kind: str) -> torch.Tensor:
    """float32 scores whose softmax is the teacher's distribution (see the module doc)."""
    out = out.float()
    if kind == "probabilities":
        return out.clamp_min(PROB_FLOOR).log()
    if kind == "log_probabilities":
        return out.clamp_min(LOG_PROB_FLOOR)
    return out
