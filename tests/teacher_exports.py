"""Real teachers as other tools export them, built at test time on scikit-learn's digits.

skl2onnx converts real scikit-learn classifiers (default ZipMap output, or ``zipmap=False``;
tree ensembles become ``ai.onnx.ml`` operators); torch.export saves a softmax-headed model
and one that returns a dict. Each builder also returns the fitted model, so a test can
measure the teacher outside the service.
"""

from __future__ import annotations

import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from tests.factories import digits, save_pt2

SKLEARN_KINDS = ("mlp", "forest", "boosting")


@cache
def sklearn_model(kind: str) -> Any:
    """A classifier fitted on the digits training split (seconds each)."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    x, y, _, _ = digits()
    models = {
        "mlp": lambda: MLPClassifier((64,), max_iter=100, random_state=0),
        "forest": lambda: RandomForestClassifier(60, random_state=0, n_jobs=1),
        # Shallow trees, a high rate: 96 % held out in a few seconds (15 trees of depth 3
        # gave 91 %, a function too coarse for a student to follow closely).
        "boosting": lambda: GradientBoostingClassifier(
            n_estimators=30, learning_rate=0.3, max_depth=2, random_state=0
        ),
    }
    # One BLAS/OpenMP thread: on a busy shared machine more threads spin against each other
    # (an MLP fit went from about 2 s to minutes).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # the MLP's ConvergenceWarning
        return models[kind]().fit(x, y)


@cache
def sklearn_onnx_bytes(kind: str, *, zipmap: bool = True, float64: bool = False) -> bytes:
    """skl2onnx's export: int64 ``label`` plus probabilities, as ZipMap unless ``zipmap``
    is False; inputs (and for most models outputs) in float64 when ``float64``."""
    from skl2onnx import to_onnx

    model = sklearn_model(kind)
    sample = digits()[0][:1].astype(np.float64 if float64 else np.float32)
    options = None if zipmap else {id(model): {"zipmap": False}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = to_onnx(model, sample, options=options)
    return bytes(onx.SerializeToString())


def held_out_accuracy(kind: str) -> float:
    _, _, xe, ye = digits()
    return float(sklearn_model(kind).score(xe, ye))


def _pt2_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return save_pt2(model, Path(tmp) / "teacher.pt2").read_bytes()


@cache
def torch_teacher(head: str) -> Any:
    """A digits MLP trained with cross-entropy, then given an export-time head:
    ``softmax`` (returns probabilities, like every Keras application) or ``dict``
    (returns ``{"embedding": [N, 32], "logits": [N, 10]}``, Hugging Face style)."""
    import torch
    from torch import nn

    from tests.factories import train_mlp_teacher

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend on a busy machine
    try:
        body = train_mlp_teacher(hidden=64, epochs=10, seed=1)
    finally:
        torch.set_num_threads(threads)

    class Softmax(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.body(x), dim=-1)

    class Dict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            hidden = self.body[:4](x)
            return {"embedding": hidden[:, :32], "logits": self.body[4](hidden)}

    return {"softmax": Softmax, "dict": Dict}[head]().eval()


@cache
def torch_pt2_bytes(head: str) -> bytes:
    return _pt2_bytes(torch_teacher(head))


def torch_predictions(head: str, x: np.ndarray) -> np.ndarray:
    """The torch teacher's classes for ``x``, computed by the model itself."""
    import torch

    with torch.inference_mode():
        out = torch_teacher(head)(torch.from_numpy(x))
    scores = out["logits"] if isinstance(out, dict) else out
    return np.asarray(scores.argmax(-1).numpy())
