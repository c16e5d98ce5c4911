"""A decoder-only student for language-model teachers (GPT-style).

It takes the engine's token batch ``[N, K, L]`` like the other token students
(``text.py``) and returns next-token logits ``[N, L, V]`` over the teacher's vocabulary.
Sinusoidal positions, pre-norm blocks of causal 4-head self-attention and a feed-forward
layer, a final layer norm; the output layer is the embedding itself (tied weights: with a
factorised embedding, ``h · Wpᵀ`` then ``· Eᵀ``), scaled by ``1/√width`` so that the
untrained model's logits have about unit scale (the embedding is drawn from N(0, 1), as
the text students' are; unscaled, the first loss would be several times log V). A position
attends to itself and to the earlier real tokens (``attention_mask`` 1): padding is never
read, and a padded position still has itself to attend to (no empty row, no NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.students.text import (
    FF_MULT,
    HEADS,
    Block,
    Embedding,
    TokenStudent,
    _factor,
    embedding_parameters,
    positions,
)


@dataclass(frozen=True)
class GPTConfig:
    input_names: tuple[str, ...]
    vocab_size: int
    num_classes: int  # = vocab_size: a next-token distribution a position
    width: int = 64
    layers: int = 2
    factor: int = 0  # the factorised embedding's rank; 0: a plain embedding
    input_dtypes: tuple[str, ...] = ()


class GPT(TokenStudent):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__(cfg.input_names, cfg.input_dtypes)
        self.width = cfg.width
        self.embed = Embedding(cfg.vocab_size, cfg.width, cfg.factor)
        self.blocks = nn.ModuleList(Block(cfg.width) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        h = self.embed(ids) + positions(length, self.width, ids.device)
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        itself = torch.eye(length, dtype=torch.bool, device=ids.device)
        allowed = (causal & mask[:, None, :]) | itself  # [N, L (query), L (key)]
        allowed = allowed[:, None]
        for block in self.blocks:
            h = block(h, allowed)
        h = self.norm(h)
        if isinstance(self.embed.project, nn.Linear):
            h = h @ self.embed.project.weight  # [N, L, r]
        out: torch.Tensor = (h @ self.embed.table.weight.t()) * self.width**-0.5
        return out


def gpt_parameters(cfg: GPTConfig) -> int:
    d = cfg.width
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d)
    block += (d * FF_MULT * d + FF_MULT * d) + (FF_MULT * d * d + d)
    return embedding_parameters(cfg.vocab_size, d, cfg.factor) + cfg.layers * block + 2 * d


def build_gpt(cfg: GPTConfig) -> nn.Module:
    return GPT(cfg)


def gpt_for_width(
    names: tuple[str, ...],
    dtypes: tuple[str, ...],
    vocab: int,
    width: int,
    layers: int,
    factorised: bool,
) -> GPTConfig:
    # Width in steps of 2 × HEADS: whole heads with an even size (sin and cos pairs).
    d = 2 * HEADS * width
    return GPTConfig(names, vocab, vocab, d, layers, _factor(d, factorised), dtypes)
