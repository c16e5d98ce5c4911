"""A tiny causal language model trained in seconds on synthetic token sequences, exported
as an ONNX file (dynamo, named inputs ``input_ids`` and ``attention_mask``, dynamic batch
and sequence, output ``logits`` ``[N, L, V]``) and as a ``.pt2``.

The sequences follow a noisy rule: ``x_{j+1} = perm[x_j]`` (a fixed permutation of the ids
1 … V − 1) with probability 0.8, else a uniform id in [1, V): the best perplexity is about
2.9 (a uniform guess: V). Lengths vary; padding is 0 on the right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tests.engine import text_helpers

VOCAB, LENGTH = 24, 12


class TinyCausalLM(nn.Module):
    """Logits at j from the embeddings of tokens j and j − 1: causal by construction."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.now = nn.Linear(32, 128)
        self.before = nn.Linear(32, 128, bias=False)
        self.head = nn.Linear(128, VOCAB)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embed(input_ids) * attention_mask.unsqueeze(-1).float()
        previous = F.pad(e, (0, 0, 1, 0))[:, :-1]
        out: torch.Tensor = self.head(torch.relu(self.now(e) + self.before(previous)))
        return out


def lm_set(n: int, seed: int, length: int = LENGTH) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = np.concatenate([[0], 1 + np.random.default_rng(1234).permutation(VOCAB - 1)])
    ids = np.zeros((n, length), dtype=np.int64)
    ids[:, 0] = rng.integers(1, VOCAB, n)
    for j in range(1, length):
        rule = perm[ids[:, j - 1]]
        noise = rng.integers(1, VOCAB, n)
        ids[:, j] = np.where(rng.random(n) < 0.8, rule, noise)
    lengths = rng.integers(4, length + 1, n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def train_lm(seed: int = 0, steps: int = 150) -> TinyCausalLM:
    data = lm_set(800, seed)
    torch.manual_seed(seed)
    model = TinyCausalLM()
    ids, mask = torch.from_numpy(data["input_ids"]), torch.from_numpy(data["attention_mask"])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    for _ in range(steps):
        logits = model(ids, mask)[:, :-1]
        loss = F.cross_entropy(logits[valid], ids[:, 1:][valid])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model.eval()


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    data = lm_set(4, 99)
    return torch.from_numpy(data["input_ids"]), torch.from_numpy(data["attention_mask"])


def export_onnx(model: nn.Module, path: Path) -> Path:
    return text_helpers.export_onnx(model, path, _example())


def export_pt2(model: nn.Module, path: Path) -> Path:
    return text_helpers.export_pt2(model, path, _example())


def save_npz(path: Path, data: dict[str, np.ndarray]) -> Path:
    np.savez(path, **data)
    return path
