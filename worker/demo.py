"""Sample files for trying the service: teachers and datasets, made in seconds from digits.

``stillhouse demo-files DIR`` calls :func:`write_demo_files`. Everything comes from
scikit-learn's bundled 8×8 digits (1,797 real images, 10 classes; no download), scaled to
[0, 1] and split 60/40 with a fixed seed: the 60 % is the transfer set, the 40 % the eval set.

Written (each atomically: a temporary file in ``DIR``, then a rename):

- ``teacher_mlp.pt2`` and ``teacher_mlp.onnx``: the same 64-1024-1024-10 MLP (1.1 M
  parameters), as a torch.export archive and as ONNX, both with a dynamic batch dimension;
- ``teacher_cnn.pt2``: a small CNN on 1×8×8 images (torch.export, dynamic batch);
- ``transfer.npz`` (``x`` [N, 64], no labels: an unlabeled transfer set),
  ``transfer_labeled.npz`` (``x``, ``y``), ``eval.npz`` (``x``, ``y``);
- ``transfer_images.npz`` (``x`` [N, 1, 8, 8]) and ``eval_images.npz`` (``x``, ``y``);
- ``transfer.csv``: 64 feature columns ``p0`` … ``p63`` and an integer ``label`` column.

Deterministic for a given torch build and thread count (seeded split, init and shuffles).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_write

SEED = 0
TRANSFER_FRACTION = 0.6
MLP_EPOCHS = 8
CNN_EPOCHS = 10
BATCH_SIZE = 128
LEARNING_RATE = 2e-3
# One thread: these models are small, and with two OpenMP threads a busy machine (say, the
# service's own worker training next to us) makes training several times slower.
TRAIN_THREADS = 1

# The dynamo ONNX exporter logs one line per torchvision op it cannot register (torchvision
# is not installed in the worker); silence exactly that logger while exporting.
_ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


class DigitsMLP(nn.Sequential):
    def __init__(self, hidden: int = 1024, num_classes: int = 10) -> None:
        super().__init__(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden, num_classes),
        )


class DigitsCNN(nn.Sequential):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, num_classes),
        )


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_transfer, y_transfer, x_eval, y_eval)``: float32 in [0, 1] [N, 64], int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # scikit-learn is a dev dependency, not a service one
        raise RuntimeError(
            "the demo files are made from scikit-learn's digits: pip install scikit-learn"
        ) from exc
    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    cut = int(round(TRANSFER_FRACTION * len(x)))
    train, held_out = np.sort(order[:cut]), np.sort(order[cut:])
    return x[train], y[train], x[held_out], y[held_out]


def train_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int = SEED
) -> nn.Module:
    """Plain Adam + cross-entropy; returns the model in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def _write_bytes(path: Path, write: Callable[[io.BufferedWriter], Any]) -> Path:
    def to(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    return atomic_write(path, to)


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    # A file object, not a name: np.savez would append ".npz" to the temporary name.
    members: dict[str, Any] = dict(arrays)
    return _write_bytes(path, lambda fh: np.savez(fh, allow_pickle=False, **members))


def _save_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([*(f"p{i}" for i in range(x.shape[1])), "label"])
    table = np.concatenate([x.astype(np.float64), y[:, None].astype(np.float64)], axis=1)
    fmt = ["%.7g"] * x.shape[1] + ["%d"]
    return _write_bytes(
        path, lambda fh: np.savetxt(fh, table, fmt=fmt, delimiter=",", header=header, comments="")
    )


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=1 << 20)


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """torch.export with a dynamic batch dimension, saved as a .pt2 archive."""
    program = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))
    return atomic_write(path, lambda tmp: torch.export.save(program, str(tmp)))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """ONNX through the dynamo exporter (offline: onnxscript), dynamic batch, weights inline."""
    logger = logging.getLogger(_ONNX_REGISTRATION_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch 2.13's exporter calls the deprecated `isinstance(treespec, LeafSpec)`.
            warnings.filterwarnings(
                "ignore", message=r".*LeafSpec.* is deprecated", category=FutureWarning
            )
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: _batch_dim()},),
                input_names=["x"],
                output_names=["logits"],
                optimize=True,
                verbose=False,
            )
    finally:
        logger.setLevel(level)
    assert program is not None
    return atomic_write(path, lambda tmp: program.save(str(tmp)))


def write_demo_files(directory: Path) -> list[Path]:
    """Write the teachers and datasets described above into ``directory``; return their paths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _write_demo_files(Path(directory))
    finally:
        torch.set_num_threads(threads)


def _write_demo_files(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_ev, y_ev = load_digits_split()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    xe = torch.from_numpy(x_ev)
    images_tr, images_ev = x_tr.reshape(-1, 1, 8, 8), x_ev.reshape(-1, 1, 8, 8)

    torch.manual_seed(SEED)
    mlp = train_classifier(DigitsMLP(), xt, yt, epochs=MLP_EPOCHS)
    torch.manual_seed(SEED + 1)
    cnn = train_classifier(
        DigitsCNN(), torch.from_numpy(images_tr), yt, epochs=CNN_EPOCHS, seed=SEED + 1
    )

    return [
        export_pt2(mlp, xe[:4], directory / "teacher_mlp.pt2"),
        export_onnx(mlp, xe[:4], directory / "teacher_mlp.onnx"),
        export_pt2(cnn, torch.from_numpy(images_ev[:4]), directory / "teacher_cnn.pt2"),
        _save_npz(directory / "transfer.npz", x=x_tr),
        _save_npz(directory / "transfer_labeled.npz", x=x_tr, y=y_tr),
        _save_npz(directory / "eval.npz", x=x_ev, y=y_ev),
        _save_npz(directory / "transfer_images.npz", x=images_tr),
        _save_npz(directory / "eval_images.npz", x=images_ev, y=y_ev),
        _save_csv(directory / "transfer.csv", x_tr, y_tr),
    ]
