"""Training checkpoints: safetensors (every tensor) + JSON (everything else), strict.

A checkpoint holds all that decides the rest of the run: the student's weights, AdamW's
moments and step counts, the schedule position, the RNG states and the data order
(epoch and batch within it; the order itself is a function of seed and epoch). Loading it
in a new process and training on gives the same final bytes as never stopping.

Write order makes the JSON the commit point: tensors go to a new file first, then the
JSON that names it (with its sha256) replaces the old JSON; both through a temporary file,
fsync and ``os.replace``. A crash at any point leaves the previous checkpoint usable.
Loading refuses missing or unused keys, wrong shapes, a tensor file whose hash does not
match, and a checkpoint from another job (``fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from core.atomic import atomic_write

FORMAT_VERSION = 1
POINTER = "checkpoint.json"
ADAMW_STATE = ("exp_avg", "exp_avg_sq", "step")
JSON_KEYS = frozenset(
    {"format_version", "fingerprint", "tensors_file", "tensors_sha256", "optimizer", "train"}
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted to resume this run exactly."""


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {
        f"optim.{i}.{name}": value.detach().cpu().contiguous()
        for i, entry in state.items()
        for name, value in entry.items()
    }


def save_checkpoint(
    workdir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: dict[str, Any],
    fingerprint: str,
) -> None:
    """``train`` holds the JSON-able loop state: step, epoch, batch, schedule, timings."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors |= _optimizer_tensors(optimizer)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
    blob = save_tensors(tensors)
    name = f"checkpoint-{int(train['step']):09d}.safetensors"
    atomic_write(workdir / name, blob)
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
        for g in optimizer.state_dict()["param_groups"]
    ]
    pointer = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "tensors_file": name,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "optimizer": {"param_groups": groups},
        "train": train,
    }
    atomic_write(workdir / POINTER, json.dumps(pointer, indent=1).encode())
    for old in workdir.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(
    workdir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    fingerprint: str,
) -> dict[str, Any] | None:
    """Restore model, optimizer and RNG in place; return the loop state, or None if no
    checkpoint exists. Raises ``CheckpointError`` rather than resume inexactly."""
    pointer_path = workdir / POINTER
    if not pointer_path.exists():
        return None
    pointer = json.loads(pointer_path.read_text())
    if set(pointer) != JSON_KEYS or pointer["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"unexpected checkpoint layout: {sorted(pointer)}")
    if pointer["fingerprint"] != fingerprint:
        raise CheckpointError("the checkpoint belongs to another job or configuration")
    blob = (workdir / pointer["tensors_file"]).read_bytes()
    if hashlib.sha256(blob).hexdigest() != pointer["tensors_sha256"]:
        raise CheckpointError("the checkpoint's tensor file does not match its hash")
    tensors = load_tensors(blob)

    params = [p for g in optimizer.param_groups for p in g["params"]]
    expected = {f"model.{k}" for k in model.state_dict()} | {"rng.torch_cpu"}
    if int(pointer["train"]["step"]) > 0:
        expected |= {f"optim.{i}.{n}" for i in range(len(params)) for n in ADAMW_STATE}
    found = set(tensors) - {"rng.torch_cuda"}
    if found != expected:
        raise CheckpointError(
            f"checkpoint keys differ: missing {sorted(expected - found)[:5]}, "
            f"unused {sorted(found - expected)[:5]}"
        )

    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".")
            i = int(index)
            if name != "step" and value.shape != params[i].shape:
                raise CheckpointError(f"{key}: shape {list(value.shape)} does not fit")
            state.setdefault(i, {})[name] = value
    optimizer.load_state_dict(
        {"state": state, "param_groups": pointer["optimizer"]["param_groups"]}
    )
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if "rng.torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"])
    train: dict[str, Any] = pointer["train"]
    return train
