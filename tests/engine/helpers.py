"""Tiny in-memory teachers and real data (scikit-learn digits) for the engine's tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ModuleTeacher:
    """Stands in for ``engine.teachers.Teacher`` around an in-memory module."""

    module: nn.Module
    num_classes: int
    input_shape: list[int | None]
    format: str = "torch_export"

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x).float()

    def to(self, device: str) -> ModuleTeacher:
        self.module.to(device)
        return self


def digits_split(seed: int = 0, train_fraction: float = 0.6) -> tuple[torch.Tensor, ...]:
    """scikit-learn's bundled digits (1,797 × 64, values 0..16), a seeded 60/40 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    n_train = round(train_fraction * len(x))
    a, b = perm[:n_train], perm[n_train:]
    return x[a], y[a], x[b], y[b]


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    seed: int = 0,
    lr: float = 1e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
) -> nn.Module:
    """Plain supervised training (teachers and the hard-label baseline)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * -(-len(x) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def mlp_teacher(hidden: int = 1200) -> nn.Module:
    """64-1200-1200-10: about 1.5 M parameters (Hinton et al.'s MNIST teacher, narrowed input)."""
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(hidden, 10),
    )


def cnn_teacher() -> nn.Module:
    """A small CNN for 1×8×8 digits."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
