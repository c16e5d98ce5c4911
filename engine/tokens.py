"""Token inputs: teachers that take integer sequences (``input_ids``, ``attention_mask``, …).

Inside the engine a token sample is one tensor ``[K, L]``: the teacher's K integer inputs in
the teacher's own order, each of length L. So every stage that moves rows (splits, soft
labels, the trainer) keeps working on one tensor a sample. Batches travel as float32 like
every other row: float32 holds every integer below 2**24 exactly, and no vocabulary comes
near 16.7 M ids. At the edges (the teacher's runtime, the student's embedding, the exported
file) the K rows become the named integer inputs again.

An input's role comes from its name: ``*mask*`` is the attention mask (1 for a real token),
``*type*`` / ``*segment*`` the segment ids, anything else token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
else:  # imported on first use: a dataset's validation never needs it
    from engine.lazy import torch

from core.tokens import role

__all__ = ["TOKEN_DTYPES", "TokenInput", "dry_run_tokens", "ids_index", "mask_index", "role"]

TOKEN_DTYPES = ("int64", "int32")
DRY_RUN_VOCAB = 2  # ids fed to a teacher whose embedding size could not be found: 0 and 1


@dataclass(frozen=True)
class TokenInput:
    name: str
    dtype: str  # "int64" | "int32"
    length: int | None  # None: dynamic

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": [None, self.length]}


def ids_index(names: Sequence[str]) -> int:
    """The position of the token ids among the inputs (the first input that is neither a
    mask nor segment ids)."""
    for k, name in enumerate(names):
        if role(name) == "ids":
            return k
    return 0


def mask_index(names: Sequence[str]) -> int | None:
    return next((k for k, name in enumerate(names) if role(name) == "mask"), None)


def split_inputs(x: torch.Tensor, inputs: Sequence[TokenInput]) -> list[torch.Tensor]:
    """A batch ``[N, K, L]`` as the K named inputs, each in its own integer dtype."""
    return [x[:, k].to(getattr(torch, spec.dtype)) for k, spec in enumerate(inputs)]


def dry_run_tokens(
    inputs: Sequence[TokenInput], rows: int, length: int, vocab: int | None, seed: int
) -> torch.Tensor:
    """A batch ``[rows, K, L]`` that makes sense to a text model: ids drawn below the
    vocabulary (from 1: 0 is usually padding), a mask of ones, segment ids zero."""
    generator = torch.Generator().manual_seed(seed)
    top = max(2, vocab or DRY_RUN_VOCAB)
    out = torch.zeros(rows, len(inputs), length, dtype=torch.int64)
    for k, spec in enumerate(inputs):
        kind = role(spec.name)
        if kind == "mask":
            out[:, k] = 1
        elif kind == "ids":
            out[:, k] = torch.randint(1, top, (rows, length), generator=generator)
    return out


def onnx_vocab_size(model: Any, ids_names: Sequence[str]) -> int | None:
    """The embedding's row count: the ``Gather`` whose indices are the token ids (directly
    or through one ``Cast``) and whose data is a 2-D initializer ``[V, D]``."""
    sources = set(ids_names)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input and node.input[0] in sources:
            sources.update(node.output)
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[1] not in sources:
            continue
        dims = initializers.get(node.input[0])
        if dims is not None and len(dims) == 2:
            return int(dims[0])
    return None


def program_vocab_size(program: Any, ids_names: Sequence[str]) -> int | None:
    """The same for a torch.export program: the weight of the ``aten.embedding`` on the ids."""
    for node in program.graph.nodes:
        if node.op != "call_function" or "embedding" not in str(node.target):
            continue
        weight, indices = node.args[0], node.args[1]
        if getattr(indices, "name", None) not in ids_names:
            continue
        value = getattr(weight, "meta", {}).get("val")
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            return int(value.shape[0])
    return None
