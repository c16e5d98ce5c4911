"""The student registry: a name, a config dataclass, a builder, which inputs fit.

The job spec names an architecture from a closed list (core/spec.py); ``core/students.py``
describes the same entries for the API, which cannot import torch (a test keeps the two
in step). Auto sizing solves each architecture's width knob so that the parameter count
lands within 25 % of the target, never above the hard cap; an architecture's families are
its depths, tried in order.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.errors import ErrorCode
from core.students import AUTO_BY_RANK, AUTO_IMAGE_SIDE, IMAGE_MIN_SIDE
from engine.errors import UserError
from engine.students.cnn import CNNConfig, build_cnn, cnn_for_width, cnn_parameters
from engine.students.cnn1d import (
    CNN1DConfig,
    build_cnn1d,
    cnn1d_for_width,
    cnn1d_parameters,
)
from engine.students.gpt import GPTConfig, build_gpt, gpt_for_width, gpt_parameters
from engine.students.layers import Standardize
from engine.students.mlp import MLPConfig, build_mlp, mlp_for_width, mlp_parameters
from engine.students.mobilenetv2 import (
    MobileNetV2Config,
    build_mobilenetv2,
    mobilenetv2_for_width,
    mobilenetv2_parameters,
)
from engine.students.resnet import (
    ResNetConfig,
    build_resnet,
    resnet_for_width,
    resnet_parameters,
)
from engine.students.text import (
    TextCNNConfig,
    TransformerConfig,
    build_text_cnn,
    build_transformer,
    text_cnn_for_width,
    text_cnn_parameters,
    transformer_for_width,
    transformer_parameters,
)

TOLERANCE = 0.25  # the student lands within ±25 % of its target parameter count
MAX_WIDTH = 1 << 16
# auto takes MobileNetV2 only from width multiplier 0.35 up (width 12 of 32), the smallest
# its paper evaluates; below, the same budget goes to the ResNet.
MOBILENET_MIN_WIDTH = 12


Family = Callable[[tuple[int, ...], int, int], Any]
# The vocabulary dominates when a plain embedding of this width would take over half the
# student's budget: then the factorised embedding is tried first.
DOMINANT_EMBEDDING_WIDTH = 64


@dataclass(frozen=True)
class TokenShape:
    """What a token student needs beyond the sample shape: the teacher's input names (in
    its order) and the vocabulary size."""

    names: tuple[str, ...]
    vocab_size: int
    dtypes: tuple[str, ...] = ()
    language_model: bool = False  # the teacher predicts the next token: a gpt student


def _text_cnn_families(tokens: TokenShape, first: bool) -> tuple[Family, ...]:
    names, dtypes, vocab = tokens.names, tokens.dtypes, tokens.vocab_size
    return tuple(
        (lambda s, c, w, f=f: text_cnn_for_width(names, dtypes, vocab, c, w, f))
        for f in (first, not first)
    )


def _transformer_families(tokens: TokenShape, first: bool) -> tuple[Family, ...]:
    names, dtypes, vocab = tokens.names, tokens.dtypes, tokens.vocab_size
    return tuple(
        (lambda s, c, w, f=f, n=n: transformer_for_width(names, dtypes, vocab, c, w, n, f))
        for n in (2, 1)
        for f in (first, not first)
    )


def _gpt_families(tokens: TokenShape, first: bool) -> tuple[Family, ...]:
    names, dtypes, vocab = tokens.names, tokens.dtypes, tokens.vocab_size
    return tuple(
        (lambda s, c, w, f=f, n=n: gpt_for_width(names, dtypes, vocab, w, n, f))
        for n in (2, 1)
        for f in (first, not first)
    )


@dataclass(frozen=True)
class StudentEntry:
    name: str
    config_cls: type[Any]
    build: Callable[[Any], nn.Module]
    parameters: Callable[[Any], int]  # exact count, from the config alone
    # One config per width; several sequences when the architecture has other shapes
    # worth trying (e.g. MLP depth 2, then depth 1 for very small targets).
    families: tuple[Callable[[tuple[int, ...], int, int], Any], ...]
    input_ranks: tuple[int, ...] | None  # ranks of one sample that fit; None = any
    description: str
    min_side: int | None = None  # images: the smallest H and W that fit
    # Token students: their families from the teacher's input names and vocabulary, the
    # factorised embedding first or last.
    token_families: Callable[[TokenShape, bool], tuple[Family, ...]] | None = None

    def fits(self, sample_shape: Sequence[int]) -> bool:
        if self.token_families is not None:
            return False  # token students take token teachers only (size_student)
        if self.input_ranks is not None and len(sample_shape) not in self.input_ranks:
            return False
        return self.min_side is None or min(sample_shape[-2:]) >= self.min_side


REGISTRY: dict[str, StudentEntry] = {
    "mlp": StudentEntry(
        "mlp",
        MLPConfig,
        build_mlp,
        mlp_parameters,
        (
            lambda s, c, w: mlp_for_width(s, c, w, depth=2),
            lambda s, c, w: mlp_for_width(s, c, w, depth=1),
        ),
        (1, 2, 3),
        "MLP over the flattened input: two hidden layers, each linear-BN-ReLU.",
    ),
    "cnn": StudentEntry(
        "cnn",
        CNNConfig,
        build_cnn,
        cnn_parameters,
        (cnn_for_width,),
        (3,),
        "2-D CNN for images (C, H, W): conv3x3-BN-ReLU-maxpool stages, linear head.",
    ),
    "cnn1d": StudentEntry(
        "cnn1d",
        CNN1DConfig,
        build_cnn1d,
        cnn1d_parameters,
        (cnn1d_for_width,),
        (2,),
        "1-D CNN for signals (C, L): conv5-BN-ReLU-maxpool stages, linear head.",
    ),
    "resnet": StudentEntry(
        "resnet",
        ResNetConfig,
        build_resnet,
        resnet_parameters,
        (
            lambda s, c, w: resnet_for_width(s, c, w, blocks=2),
            lambda s, c, w: resnet_for_width(s, c, w, blocks=1),
        ),
        (3,),
        "ResNet for images (C, H, W): residual stages of basic blocks (two conv3x3-BN, "
        "identity shortcut), widths w-2w-4w-8w, global average pool, linear head.",
        IMAGE_MIN_SIDE,
    ),
    "mobilenetv2": StudentEntry(
        "mobilenetv2",
        MobileNetV2Config,
        build_mobilenetv2,
        mobilenetv2_parameters,
        (
            lambda s, c, w: mobilenetv2_for_width(s, c, w, depth=4),
            lambda s, c, w: mobilenetv2_for_width(s, c, w, depth=2),
            lambda s, c, w: mobilenetv2_for_width(s, c, w, depth=1),
        ),
        (3,),
        "MobileNetV2 for images (C, H, W): inverted residuals (1x1 expansion, depthwise "
        "conv3x3, linear 1x1 bottleneck), the paper's 7 stages scaled by a width multiplier.",
        IMAGE_MIN_SIDE,
    ),
    "text_cnn": StudentEntry(
        "text_cnn",
        TextCNNConfig,
        build_text_cnn,
        text_cnn_parameters,
        (),
        (),
        "Text CNN for token teachers (Kim 2014): an embedding (factorised when the vocabulary "
        "dominates), convolutions of widths 3, 4 and 5, masked max-pool over time, linear head.",
        token_families=_text_cnn_families,
    ),
    "transformer": StudentEntry(
        "transformer",
        TransformerConfig,
        build_transformer,
        transformer_parameters,
        (),
        (),
        "Small transformer encoder for token teachers: an embedding with sinusoidal "
        "positions, 2 (or 1) pre-norm blocks of 4-head self-attention over the unmasked "
        "tokens, masked mean pool, linear head.",
        token_families=_transformer_families,
    ),
    "gpt": StudentEntry(
        "gpt",
        GPTConfig,
        build_gpt,
        gpt_parameters,
        (),
        (),
        "Decoder-only transformer for language-model teachers: an embedding with sinusoidal "
        "positions, 2 (or 1) pre-norm blocks of causal 4-head self-attention, the output "
        "layer tied to the embedding; next-token logits over the teacher's vocabulary.",
        token_families=_gpt_families,
    ),
}
TOKEN_AUTO = ("text_cnn", "transformer")
LM_AUTO = ("gpt",)


def build_student(name: str, config: Any) -> nn.Module:
    return REGISTRY[name].build(config)


def init_student(
    name: str, config: Any, *, seed: int, inputs: torch.Tensor | Iterable[torch.Tensor]
) -> nn.Module:
    """Build with weights drawn from ``seed`` (without touching the global RNG) and fit the
    input standardisation to ``inputs`` (the training samples, whole or in chunks)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_student(name, config)
    for module in model.modules():
        if isinstance(module, Standardize):
            module.fit(inputs)
            break
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def config_to_dict(name: str, config: Any) -> dict[str, Any]:
    """The JSON that rebuilds the student from the registry (no code, no import paths)."""
    return {"architecture": name, "config": dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> tuple[str, Any]:
    name = data["architecture"]
    if name not in REGISTRY:
        raise UserError(ErrorCode.BAD_STUDENT_CONFIG, f"unknown architecture {name!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(data["config"]).items()}
    return name, REGISTRY[name].config_cls(**fields)


def student_from_json(text: str) -> tuple[str, Any, nn.Module]:
    name, config = config_from_dict(json.loads(text))
    return name, config, build_student(name, config)


def _solve_family(
    entry: StudentEntry,
    family: Callable[[tuple[int, ...], int, int], Any],
    sample_shape: tuple[int, ...],
    num_classes: int,
    target: float,
    cap: int,
) -> Any | None:
    """The config of this family whose parameter count is closest to ``target``, ≤ cap.

    The count grows with the width, so a binary search finds the widest config at or
    under the target; it or the next width up is the closest.
    """

    def size(w: int) -> int:
        return entry.parameters(family(sample_shape, num_classes, w))

    lo, hi = 1, MAX_WIDTH
    if size(lo) > target:
        hi = lo
    else:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if size(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        hi = lo + 1
    best = None
    for w in sorted({lo, hi}):
        p = size(w)
        fits = p <= cap and abs(p - target) <= TOLERANCE * target
        if fits and (best is None or abs(p - target) < abs(size(best) - target)):
            best = w
    return None if best is None else family(sample_shape, num_classes, best)


def size_student(
    architecture: str,
    sample_shape: Sequence[int],
    num_classes: int,
    *,
    target: float,
    cap: int,
    hidden: Sequence[int] | None = None,
    tokens: TokenShape | None = None,
) -> tuple[str, Any]:
    """Pick (for ``auto``) and size a student to ``target`` parameters, at most ``cap``.

    ``hidden`` (mlp only) gives the widths outright: no sizing, only the cap is checked.

    ``auto`` picks by the sample's shape and the budget (``_auto_candidates``); when the
    convolutional student cannot be made that small (a tiny image), it falls back to an
    MLP on the flattened input. Raises ``UserError`` when no student of the asked
    architecture lands within 25 % of the target.
    """
    shape = tuple(int(s) for s in sample_shape)
    if tokens is not None:
        return _size_token_student(architecture, shape, num_classes, target, cap, tokens)
    if hidden is not None:
        return "mlp", _explicit_mlp(architecture, shape, num_classes, hidden, cap)
    if architecture == "auto":
        candidates = _auto_candidates(shape, num_classes, target)
    else:
        if architecture not in REGISTRY:
            raise UserError(ErrorCode.BAD_SPEC, f"student.architecture: unknown {architecture!r}")
        if not REGISTRY[architecture].fits(shape):
            raise UserError(
                ErrorCode.BAD_SPEC,
                f"student.architecture: {architecture!r} does not fit samples of shape "
                f"{list(shape)}",
            )
        candidates = [architecture]
    families = {name: REGISTRY[name].families for name in candidates}
    return _solve(families, shape, num_classes, target, cap)


def _size_token_student(
    architecture: str,
    shape: tuple[int, ...],
    num_classes: int,
    target: float,
    cap: int,
    tokens: TokenShape,
) -> tuple[str, Any]:
    """A token student: auto picks text_cnn, then transformer; gpt for a language model."""
    if tokens.language_model:
        if architecture not in ("auto", *LM_AUTO):
            raise UserError(
                ErrorCode.BAD_SPEC,
                f"student.architecture: {architecture!r} is no language model; use auto or gpt",
            )
        candidates: Sequence[str] = LM_AUTO
    elif architecture == "auto":
        candidates = TOKEN_AUTO
    elif architecture in LM_AUTO:
        raise UserError(
            ErrorCode.BAD_SPEC,
            f"student.architecture: {architecture!r} needs a language-model teacher "
            "(output [N, L, vocab])",
        )
    elif architecture in TOKEN_AUTO:
        candidates = [architecture]
    else:
        raise UserError(
            ErrorCode.BAD_SPEC,
            f"student.architecture: {architecture!r} does not take token inputs; use "
            f"{' or '.join(repr(n) for n in ('auto', *TOKEN_AUTO))}",
        )
    dominant = tokens.vocab_size * DOMINANT_EMBEDDING_WIDTH > target / 2
    families = {}
    for name in candidates:
        build = REGISTRY[name].token_families
        assert build is not None
        families[name] = build(tokens, dominant)
    return _solve(families, shape, num_classes, target, cap)


def _solve(
    families: dict[str, tuple[Family, ...]],
    shape: tuple[int, ...],
    num_classes: int,
    target: float,
    cap: int,
) -> tuple[str, Any]:
    for name, options in families.items():
        entry = REGISTRY[name]
        for family in options:
            config = _solve_family(entry, family, shape, num_classes, target, cap)
            if config is not None:
                return name, config
    candidates = list(families)
    smallest = min(
        REGISTRY[n].parameters(f(shape, num_classes, 1))
        for n, options in families.items()
        for f in options
    )
    raise UserError(
        ErrorCode.STUDENT_SIZE,
        f"student: no {'/'.join(candidates)} student has about {math.floor(target)} "
        f"parameters (±25 %, at most {cap}) for samples of shape {list(shape)}; the "
        f"smallest has {smallest}. Raise student.size_ratio or student.max_parameters.",
    )


def _auto_candidates(shape: tuple[int, ...], num_classes: int, target: float) -> list[str]:
    """By rank: vectors → mlp, (C, L) → cnn1d, (C, H, W) → cnn; images of at least
    ``AUTO_IMAGE_SIDE`` → mobilenetv2 when the budget reaches its smallest width multiplier,
    else resnet. Each falls back to the next (a budget too small for it): cnn, then mlp."""
    if len(shape) == 3 and min(shape[1:]) >= AUTO_IMAGE_SIDE:
        smallest = mobilenetv2_parameters(
            mobilenetv2_for_width(shape, num_classes, MOBILENET_MIN_WIDTH)
        )
        first = ["mobilenetv2", "resnet"] if target >= smallest else ["resnet"]
        return [*first, "cnn", "mlp"]
    rank_pick = AUTO_BY_RANK.get(len(shape), "mlp")
    return [rank_pick] if rank_pick == "mlp" else [rank_pick, "mlp"]


def _explicit_mlp(
    architecture: str,
    shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int],
    cap: int,
) -> MLPConfig:
    if architecture != "mlp":
        raise UserError(ErrorCode.BAD_SPEC, 'student.hidden: only valid with architecture "mlp"')
    config = MLPConfig(shape, num_classes, tuple(int(h) for h in hidden))
    if mlp_parameters(config) > cap:
        raise UserError(
            ErrorCode.STUDENT_SIZE,
            f"student.hidden: {list(config.hidden)} gives {mlp_parameters(config)} "
            f"parameters, more than the cap of {cap} (the teacher or max_parameters)",
        )
    return config


# A student for feature vectors sized by the ratio alone is never narrower than this many
# hidden units a class (where the teacher's size allows): digits' 64-unit MLP teacher (4.8 k
# parameters, 98 % accurate) got a 6-6 student from a tenth of its size, which agreed with it
# on 40-61 % of held-out digits; 10-10 on 78-86 %, 16-16 on 93-94 % (two seeds each).
MIN_WIDTH_PER_CLASS = 2


def floored_target(
    target: float, cap: int, architecture: str, sample_shape: Sequence[int], num_classes: int
) -> float:
    """``target`` raised to the size of a two-layer MLP ``MIN_WIDTH_PER_CLASS`` × classes
    wide, for an ``auto`` or ``mlp`` student of feature vectors, when that fits the cap
    (the teacher's size and ``max_parameters``); any other target is kept."""
    if architecture not in ("auto", "mlp") or len(sample_shape) != 1:
        return target
    floor = mlp_parameters(
        mlp_for_width(tuple(sample_shape), num_classes, MIN_WIDTH_PER_CLASS * num_classes)
    )
    return float(floor) if target < floor <= cap else target


def student_target(
    teacher_parameters: int | None, size_ratio: float, max_parameters: int | None
) -> tuple[float, int]:
    """(target, hard cap) in parameters.

    target = size_ratio × teacher parameters, lowered to max_parameters when that is
    smaller. The cap is max_parameters and the teacher's own size: a student is never
    bigger than what it replaces. For an ensemble the engine passes its largest member, so
    the student is size_ratio of any single teacher, not of the ensemble's sum.
    """
    if teacher_parameters is None:
        if max_parameters is None:
            raise UserError(
                ErrorCode.BAD_SPEC,
                "student.max_parameters: the teacher's parameter count is unknown, so "
                "give the student's size as max_parameters",
            )
        return float(max_parameters), max_parameters
    target = size_ratio * teacher_parameters
    cap = teacher_parameters
    if max_parameters is not None:
        target = min(target, float(max_parameters))
        cap = min(cap, max_parameters)
    return target, cap
