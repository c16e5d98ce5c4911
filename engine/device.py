"""Device choice and the numerics that depend on it.

CUDA: bf16 autocast for the student's forward pass (tensor cores; the loss stays fp32),
pinned host memory and non-blocking copies. CPU: plain fp32 — CPUs without native bf16
run bf16 autocast 2–10× slower (measured on AMD Zen 3).
"""

from __future__ import annotations

import contextlib
import math
import platform
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

INFERENCE_ELEMENTS = 1 << 24  # input elements per teacher batch on the CPU (64 MiB of fp32)
MAX_INFERENCE_BATCH = 8192  # rows per teacher batch on the CPU
MAX_CUDA_BATCH = 65536
# On CUDA a batch's input gets this share of the free memory: activations of a forward pass
# take many times the input's bytes (a ResNet-50 at 224 px about 20x in bf16 inference).
CUDA_INPUT_SHARE = 1 / 64
# Token rows are small inputs to large activations: a transformer teacher keeps about
# (hidden × 10) floats a token in flight (all-MiniLM-L6-v2, hidden 384: 8,192 rows of 32
# tokens held 10.8 GB in ONNX Runtime). Its batches are sized in tokens instead.
INFERENCE_TOKENS = 1 << 14  # tokens per teacher batch on the CPU (~0.7 GB for that MiniLM)
CUDA_INFERENCE_TOKENS = 1 << 17


def resolve_device(name: str | None = None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but is not available")
    return device


def device_name(device: torch.device) -> str:
    """What the report names the device by: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def inference_batch(
    sample_shape: tuple[int, ...],
    device: torch.device,
    free_bytes: int | None = None,
    *,
    tokens: bool = False,
) -> int:
    """Rows per teacher batch: 64 MiB of input on the CPU; on CUDA a share of the memory that
    is free now (``free_bytes`` overrides the reading), up to ``MAX_CUDA_BATCH`` rows.
    ``tokens``: rows ``[K, L]`` of token ids, also capped at a number of tokens a batch."""
    per_row = max(1, math.prod(sample_shape))
    if device.type != "cuda":
        rows = min(MAX_INFERENCE_BATCH, INFERENCE_ELEMENTS // per_row)
        budget = INFERENCE_TOKENS
    else:
        if free_bytes is None:
            free_bytes = int(torch.cuda.mem_get_info(device)[0])
        rows = min(MAX_CUDA_BATCH, int(free_bytes * CUDA_INPUT_SHARE) // (4 * per_row))
        budget = CUDA_INFERENCE_TOKENS
    if tokens:
        rows = min(rows, budget // max(1, sample_shape[-1]))
    return max(1, rows)


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """CNN students train channels-last on CUDA (tensor-core convolutions want NHWC)."""
    return device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


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
