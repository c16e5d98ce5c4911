"""No hostile file makes a loader call torch.load(weights_only=False), and small hostile
uploads cost little memory: sizes are checked before anything is read or allocated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.worker.distill import hostile
from worker.distill.data import inspect_dataset
from worker.distill.errors import UserError
from worker.distill.teachers import load_teacher

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def real_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    return hostile.save_pt2(hostile.MLP(), torch.zeros(4, 64), folder / "mlp.pt2", dynamic=True)


def teacher_corpus(real: Path, folder: Path, marker: Path) -> dict[str, Path]:
    """Every hostile .pt2 that tests/worker/distill/hostile.py can build."""
    out = folder / "corpus"
    out.mkdir()
    return {
        "pickled_weight": hostile.pt2_with_pickled_weight(real, out / "a.pt2", marker),
        "pickled_inputs": hostile.pt2_with_pickled_sample_inputs(real, out / "b.pt2", marker),
        "sympy": hostile.pt2_with_sympy_payload(real, out / "c.pt2", marker),
        "opaque": hostile.pt2_with_opaque_constant(real, out / "d.pt2", marker),
        "extra_so": hostile.pt2_with_extra_member(real, out / "e.pt2", "data/aotinductor/m.so"),
        "extra_pt": hostile.pt2_with_extra_member(real, out / "f.pt2", "data/weights/model.pt"),
        "graph": hostile.pt2_with_graph_target(real, out / "g.pt2", "builtins.exec"),
        "cuda_inputs": hostile.pt2_with_cuda_sample_inputs(real, out / "h.pt2"),
        "cuda_weight": hostile.pt2_with_cuda_pickled_weight(real, out / "i.pt2"),
    }


def test_no_hostile_pt2_reaches_torch_load_without_weights_only(
    real_pt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    original: Callable[..., Any] = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    marker = tmp_path / "pwned"
    codes = {}
    for name, path in teacher_corpus(real_pt2, tmp_path, marker).items():
        with pytest.raises(UserError) as caught:
            load_teacher(path, "torch_export")
        codes[name] = caught.value.code
    assert load_teacher(real_pt2, "torch_export").num_classes == 10  # torch.load ran, too
    assert calls and all(weights_only is True for weights_only in calls), calls
    assert codes["cuda_inputs"] == codes["cuda_weight"] == "unsafe_location"
    assert not marker.exists()


def test_the_cuda_sample_inputs_would_have_reached_the_unsafe_retry(
    real_pt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the guard, torch.export.load itself falls back to weights_only=False."""
    if torch.cuda.is_available():
        pytest.skip("with CUDA the weights_only=True load succeeds")
    path = hostile.pt2_with_cuda_sample_inputs(real_pt2, tmp_path / "cuda.pt2")
    calls: list[Any] = []
    original: Callable[..., Any] = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever torch makes of it
        torch.export.load(str(path))
    assert False in calls


# --- memory: measured on the real sandbox, from outside -----------------------------------

MEASURE = """
import json, sys
from pathlib import Path
from core.settings import get_settings
from worker.sandbox import SandboxError, run_once, upload_caps
settings = get_settings()
op, fmt, path = sys.argv[1:]
try:
    info = run_once(
        {"op": op, "format": fmt, "caps": upload_caps(settings)},
        inputs={"path": Path(path)},
        memory_bytes=settings.validation_memory_bytes,
        cpu_seconds=600,
        timeout_s=600,
    )
    out = {"info": info, "error": None, "peak": info["peak_rss_bytes"]}
except SandboxError as exc:
    out = {"info": None, "error": {"code": exc.code}, "peak": exc.peak_rss_bytes}
print(json.dumps(out))
"""


def validate(op: str, fmt: str, path: Path, **settings: str) -> dict[str, Any]:
    """Validate ``path`` as the worker does (the sandbox, its memory cap and the caps of
    the settings: ``settings`` are STILLHOUSE_ variables). ``peak`` is the sandboxed
    process's own peak resident memory, as it reports it in its last line."""
    extra = {f"STILLHOUSE_{name.upper()}": value for name, value in settings.items()}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, op, fmt, str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **extra},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_small_zip_holding_a_2_gib_png_is_refused_in_little_memory(tmp_path: Path) -> None:
    path = hostile.zip_with_inflating_member(
        tmp_path / "bomb.zip", "a.png", 2 * 1024 * MiB, head=b"\x89PNG\r\n\x1a\n"
    )
    assert path.stat().st_size < 20 * MiB
    result = validate("inspect_dataset", "image_zip", path)
    assert result["error"]["code"] == "archive_too_large", result
    assert result["peak"] < 512 * MiB, result


def test_a_member_named_png_that_is_not_one_is_refused_from_its_first_bytes(
    tmp_path: Path,
) -> None:
    path = hostile.zip_with_inflating_member(tmp_path / "fake.zip", "a.png", 512 * 1024)
    with pytest.raises(UserError) as caught:
        inspect_dataset(path, "image_zip")
    assert caught.value.code == "unsupported_image"


def test_an_npz_inflating_to_1_gib_is_refused_in_little_memory(tmp_path: Path) -> None:
    path = hostile.npz_inflating(tmp_path / "bomb.npz", 1024 * MiB)
    assert path.stat().st_size < 10 * MiB
    result = validate("inspect_dataset", "npz", path)
    assert result["error"]["code"] == "archive_too_large", result
    assert result["peak"] < 512 * MiB, result


def test_a_compressed_npz_of_real_data_is_accepted(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez_compressed(path, x=digits.data.astype(np.float32), y=digits.target)
    result = validate("inspect_dataset", "npz", path)
    assert result["error"] is None and result["info"]["num_samples"] == 1797, result


def test_an_onnx_teacher_that_allocates_2_gib_is_too_large(tmp_path: Path) -> None:
    path = hostile.onnx_memory_bomb(tmp_path / "bomb.onnx")
    assert path.stat().st_size < 10_000
    result = validate("inspect_teacher", "onnx", path)
    assert result["error"]["code"] == "too_large", result
    assert result["peak"] < 512 * MiB, result  # the 2 GiB allocation never happened


def test_a_small_onnx_teacher_is_accepted(tmp_path: Path) -> None:
    path = hostile.onnx_memory_bomb(tmp_path / "fine.onnx", elements=1024)
    result = validate("inspect_teacher", "onnx", path)
    assert result["error"] is None and result["info"]["num_classes"] == 3, result


def test_the_archive_caps_are_the_operators_settings(tmp_path: Path) -> None:
    png = hostile.image_bytes("L", (8, 8), "PNG")
    path = hostile.zip_with_entries(tmp_path / "three.zip", {f"{i}.png": png for i in range(3)})
    assert validate("inspect_dataset", "image_zip", path)["info"]["num_samples"] == 3
    capped = validate("inspect_dataset", "image_zip", path, max_archive_entries="2")
    assert capped["error"]["code"] == "too_many_entries"
    tiny = validate("inspect_dataset", "image_zip", path, max_image_pixels="63")
    assert tiny["error"]["code"] in ("image_too_large", "too_large")
