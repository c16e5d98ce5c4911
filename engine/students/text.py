"""Students for token teachers: a text CNN (Kim 2014) and a small transformer encoder.

Both take the engine's token batch ``[N, K, L]`` (the teacher's K integer inputs stacked,
``tokens.py``), read the ids and the attention mask from it by the inputs' names, and
return logits ``[N, classes]``. ``forward_tokens`` takes the named inputs themselves: what
the exported file runs (``export.py``), so the student drops in for the teacher.

Where the vocabulary dominates the parameter count, the embedding is factorised (ALBERT):
``V × r`` then ``r × E``, with ``r = E / 4``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.tokens import ids_index, mask_index

KERNELS = (3, 4, 5)  # Kim (2014)'s filter widths
HEADS = 4
FF_MULT = 2  # the feed-forward layer's width / the model width
FACTOR = 4  # a factorised embedding's rank is its width / FACTOR


@dataclass(frozen=True)
class TextCNNConfig:
    input_names: tuple[str, ...]
    vocab_size: int
    num_classes: int
    width: int = 64  # embedding size and channels per filter width
    factor: int = 0  # the factorised embedding's rank; 0: a plain embedding
    input_dtypes: tuple[str, ...] = ()  # the exported file's, as the teacher's; () all int64


@dataclass(frozen=True)
class TransformerConfig:
    input_names: tuple[str, ...]
    vocab_size: int
    num_classes: int
    width: int = 64  # the model width
    layers: int = 2
    factor: int = 0
    input_dtypes: tuple[str, ...] = ()


class Embedding(nn.Module):
    def __init__(self, vocab: int, width: int, factor: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, factor or width)
        self.project = nn.Linear(factor, width, bias=False) if factor else nn.Identity()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.project(self.table(ids))
        return out


def embedding_parameters(vocab: int, width: int, factor: int) -> int:
    return vocab * factor + factor * width if factor else vocab * width


class TokenInterface(nn.Module):
    """What the exported file holds: the student called with the teacher's named inputs."""

    def __init__(self, student: TokenStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.student.forward_tokens(*inputs)


class TokenStudent(nn.Module):
    """Reads ids and mask from the stacked batch; subclasses implement ``encode``."""

    def __init__(self, names: tuple[str, ...], dtypes: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        self.dtypes = dtypes or tuple("int64" for _ in names)
        self.ids_at, self.mask_at = ids_index(names), mask_index(names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, self.ids_at].long()
        mask = (ids != 0) if self.mask_at is None else x[:, self.mask_at] != 0
        return self.encode(ids, mask)

    def forward_tokens(self, *inputs: torch.Tensor) -> torch.Tensor:
        ids = inputs[self.ids_at].long()
        mask = (ids != 0) if self.mask_at is None else inputs[self.mask_at] != 0
        return self.encode(ids, mask)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TextCNN(TokenStudent):
    def __init__(self, cfg: TextCNNConfig) -> None:
        super().__init__(cfg.input_names, cfg.input_dtypes)
        self.embed = Embedding(cfg.vocab_size, cfg.width, cfg.factor)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.width, cfg.width, k) for k in KERNELS)
        self.head = nn.Linear(cfg.width * len(KERNELS), cfg.num_classes)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(1).float()
        # Padded positions embed as zeros: a window at the edge of the text reads nothing
        # from whatever ids the padding holds.
        h = self.embed(ids).transpose(1, 2) * keep  # [N, E, L]
        # After the ReLU every value is >= 0, so zeroing padded positions leaves the max over
        # the real tokens unchanged: a masked max-pool over time without -inf.
        pooled = []
        for k, conv in zip(KERNELS, self.convs, strict=True):
            # "same" padding, the extra zero of an even width on the right: one output per
            # token, aligned with the mask.
            padded = F.pad(h, ((k - 1) // 2, k // 2))
            pooled.append((F.relu(conv(padded)) * keep).amax(dim=2))
        out: torch.Tensor = self.head(torch.cat(pooled, dim=1))
        return out


def text_cnn_parameters(cfg: TextCNNConfig) -> int:
    w = cfg.width
    convs = sum(w * w * k + w for k in KERNELS)
    head = w * len(KERNELS) * cfg.num_classes + cfg.num_classes
    return embedding_parameters(cfg.vocab_size, w, cfg.factor) + convs + head


class Block(nn.Module):
    """Pre-norm encoder block: self-attention over the unmasked tokens, then a feed-forward."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ff = nn.Sequential(
            nn.Linear(width, FF_MULT * width), nn.GELU(), nn.Linear(FF_MULT * width, width)
        )

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        n, length, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, HEADS, width // HEADS).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        h = h + self.out(attended.transpose(1, 2).reshape(n, length, width))
        out: torch.Tensor = h + self.ff(self.norm2(h))
        return out


class TextTransformer(TokenStudent):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg.input_names, cfg.input_dtypes)
        self.width = cfg.width
        self.embed = Embedding(cfg.vocab_size, cfg.width, cfg.factor)
        self.blocks = nn.ModuleList(Block(cfg.width) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.num_classes)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + positions(ids.shape[1], self.width, ids.device)
        # A row with no token at all would attend to nothing (NaN): let it see itself.
        mask = mask | ~mask.any(dim=1, keepdim=True)
        allowed = mask[:, None, None, :]
        for block in self.blocks:
            h = block(h, allowed)
        keep = mask.unsqueeze(-1).to(h.dtype)
        pooled = (self.norm(h) * keep).sum(dim=1) / keep.sum(dim=1)
        out: torch.Tensor = self.head(pooled)
        return out


def positions(length: int, width: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal positions (Vaswani et al.): no parameters, any sequence length."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / width)
    )
    angles = pos * freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, width)


def transformer_parameters(cfg: TransformerConfig) -> int:
    d = cfg.width
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d)
    block += (d * FF_MULT * d + FF_MULT * d) + (FF_MULT * d * d + d)
    head = 2 * d + d * cfg.num_classes + cfg.num_classes
    return embedding_parameters(cfg.vocab_size, d, cfg.factor) + cfg.layers * block + head


def build_text_cnn(cfg: TextCNNConfig) -> nn.Module:
    return TextCNN(cfg)


def build_transformer(cfg: TransformerConfig) -> nn.Module:
    return TextTransformer(cfg)


def text_cnn_for_width(
    names: tuple[str, ...],
    dtypes: tuple[str, ...],
    vocab: int,
    classes: int,
    width: int,
    factorised: bool,
) -> TextCNNConfig:
    return TextCNNConfig(names, vocab, classes, width, _factor(width, factorised), dtypes)


def transformer_for_width(
    names: tuple[str, ...],
    dtypes: tuple[str, ...],
    vocab: int,
    classes: int,
    width: int,
    layers: int,
    factorised: bool,
) -> TransformerConfig:
    # Width in steps of 2 × HEADS: whole heads with an even size (sin and cos pairs).
    d = 2 * HEADS * width
    return TransformerConfig(names, vocab, classes, d, layers, _factor(d, factorised), dtypes)


def _factor(width: int, factorised: bool) -> int:
    return max(1, width // FACTOR) if factorised else 0
