"""Device choice and the numerics that depend on it.

CUDA: bf16 autocast for the student's forward pass (tensor cores; the loss stays fp32),
pinned host memory and non-blocking copies. CPU: plain fp32 — CPUs without native bf16
run bf16 autocast 2–10× slower (measured on AMD Zen 3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(name: str | None = None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but is not available")
    return device


def set_threads(threads: int | None) -> None:
    """The worker decides (workers × threads ≤ cores); None leaves torch's default."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels: needed before reading a clock around CUDA work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device copy; from pinned memory it overlaps with compute (non_blocking)."""
    if x.device == device or device.type != "cuda":
        return x.to(device)
    if x.device.type == "cpu" and not x.is_pinned():
        x = x.pin_memory()  # the caching host allocator keeps it alive until the copy ends
    return x.to(device, non_blocking=True)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Turn TF32 off on CUDA (cuDNN convolutions use it by default): numbers that go in the
    report must match what a CPU or strict-fp32 run of the same model gives."""
    if not torch.cuda.is_available():
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
