"""Tiny real teachers and datasets for service tests, built at test time (no binary blobs)."""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits in [0, 1], a seeded 60/40 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(0.6 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def train_mlp_teacher(hidden: int = 128, epochs: int = 20, seed: int = 0):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    x, y, _, _ = digits()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def save_pt2(model, path: Path, features: int = 64) -> Path:  # type: ignore[no-untyped-def]
    import torch

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(
            model, (torch.zeros(2, features),), dynamic_shapes=({0: batch},)
        )
        torch.export.save(program, str(path))
    return path


@lru_cache(maxsize=1)
def teacher_pt2_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = save_pt2(train_mlp_teacher(), Path(tmp) / "teacher.pt2")
        return path.read_bytes()


def npz_bytes(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    if y is None:
        np.savez(buf, x=x)
    else:
        np.savez(buf, x=x, y=y)
    return buf.getvalue()
