"""No hostile file makes a loader call torch.load(weights_only=False), and small hostile
uploads cost little memory: sizes are checked before anything is read or allocated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import ErrorCode
from engine.data import inspect_dataset
from engine.errors import UserError
from engine.teachers import load_teacher
from tests.conftest import ROOT
from tests.engine import hostile

# Sandboxed validations measured from outside: the whole suite runs them, the fast lane
# does not.
pytestmark = pytest.mark.slow

MiB = 1024 * 1024
# The goal: any upload of 10 MB or less is answered with at most this much memory
# more than validating a tiny valid file takes (the child's imports: torch, numpy, ORT).
EXTRA_BUDGET = 512 * MiB


@pytest.fixture(scope="module")
def real_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    return hostile.save_pt2(hostile.MLP(), torch.zeros(4, 64), folder / "mlp.pt2", dynamic=True)


@pytest.fixture
def torch_load_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every torch.load call's weights_only, while the test runs."""
    calls: list[Any] = []
    original: Callable[..., Any] = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    yield calls


def teacher_corpus(real: Path, folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """Every hostile teacher that tests/engine/hostile.py can build, with its format."""
    out = folder / "corpus"
    out.mkdir()
    pt2 = {
        "pickled_weight": hostile.pt2_with_pickled_weight(real, out / "a.pt2", marker),
        "pickled_inputs": hostile.pt2_with_pickled_sample_inputs(real, out / "b.pt2", marker),
        "sympy": hostile.pt2_with_sympy_payload(real, out / "c.pt2", marker),
        "opaque": hostile.pt2_with_opaque_constant(real, out / "d.pt2", marker),
        "extra_so": hostile.pt2_with_extra_member(real, out / "e.pt2", "data/aotinductor/m.so"),
        "extra_pt": hostile.pt2_with_extra_member(real, out / "f.pt2", "data/weights/model.pt"),
        "graph": hostile.pt2_with_graph_target(real, out / "g.pt2", "builtins.exec"),
        "cuda_inputs": hostile.pt2_with_cuda_sample_inputs(real, out / "h.pt2"),
        "cuda_weight": hostile.pt2_with_cuda_pickled_weight(real, out / "i.pt2"),
        "traversal": hostile.zip_with_entries(out / "j.pt2", {"../evil": b"x"}),
    }
    corpus = {name: (path, "torch_export") for name, path in pt2.items()}
    corpus["torchscript"] = (real, "torchscript")
    corpus["onnx_external"] = (hostile.onnx_with_external_data(out / "k.onnx", "/etc"), "onnx")
    return corpus


def dataset_corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    out = folder / "datasets"
    out.mkdir()
    return {
        "lying_npy": (hostile.npy_with_lying_header(out / "a.npy"), "npy"),
        "npz_bomb": (hostile.npz_inflating(out / "b.npz", 64 * MiB), "npz"),
        "png_bomb": (
            hostile.zip_with_entries(out / "c.zip", {"a.png": hostile.png_bomb()}),
            "image_zip",
        ),
        "zip_link": (hostile.zip_with_entries(out / "d.zip", {}, links=("a.png",)), "image_zip"),
    }


def test_no_hostile_file_reaches_torch_load_without_weights_only(
    real_pt2: Path, tmp_path: Path, torch_load_calls: list[Any]
) -> None:
    marker = tmp_path / "pwned"
    codes = {}
    for name, (path, fmt) in teacher_corpus(real_pt2, tmp_path, marker).items():
        with pytest.raises(UserError) as caught:
            load_teacher(path, fmt)
        codes[name] = caught.value.code
    for name, (path, fmt) in dataset_corpus(tmp_path).items():
        with pytest.raises(UserError) as caught:
            inspect_dataset(path, fmt)
        codes[name] = caught.value.code
    assert load_teacher(real_pt2, "torch_export").num_classes == 10  # torch.load ran, too
    assert torch_load_calls and all(w is True for w in torch_load_calls), torch_load_calls
    assert codes["cuda_inputs"] == codes["cuda_weight"] == ErrorCode.UNSAFE_LOCATION
    assert not marker.exists()


def test_the_cuda_sample_inputs_would_have_reached_the_unsafe_retry(
    real_pt2: Path, tmp_path: Path, torch_load_calls: list[Any]
) -> None:
    """Without the guard, torch.export.load itself falls back to weights_only=False."""
    if torch.cuda.is_available():
        pytest.skip("with CUDA the weights_only=True load succeeds")
    path = hostile.pt2_with_cuda_sample_inputs(real_pt2, tmp_path / "cuda.pt2")
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever torch makes of it
        torch.export.load(str(path))
    assert False in torch_load_calls


# --- memory: measured on the real sandbox, from outside -----------------------------------

# Runs in a process of its own, whose only children are the sandbox's: its RUSAGE_CHILDREN
# peak is the sandboxed validation's (bwrap reaps the command, pid 1 inside, and we reap bwrap).
MEASURE = """
import json, resource, sys
from core.contracts import InspectDatasetRequest, InspectTeacherRequest
from core.settings import engine_limits, get_settings
from worker.sandbox import SandboxError, run_once

op, fmt, path = sys.argv[1:]
kind = InspectTeacherRequest if op == "teacher" else InspectDatasetRequest
try:
    info = run_once(
        kind(path=path, format=fmt, limits=engine_limits(get_settings())),
        memory_bytes=get_settings().validation_memory_bytes,
        cpu_seconds=600,
        timeout_s=600,
    )
    out = {"info": info.model_dump(), "error": None}
except SandboxError as exc:
    out = {"info": None, "error": {"code": exc.code, "message": exc.message}}
out["peak"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(out))
"""


def validate(op: str, fmt: str, path: Path, **settings: str) -> dict[str, Any]:
    """Validate ``path`` as the worker does (the sandbox, its memory cap, the caps of the
    settings: ``settings`` are STILLHOUSE_ variables); ``peak`` is its peak resident memory."""
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
    print(f"{op} {fmt} {path.name}: peak {result['peak'] / MiB:.0f} MiB, {result['error']}")
    return result


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The peak memory of validating tiny valid files: what any validation costs."""
    folder = tmp_path_factory.mktemp("baseline")
    npz = folder / "tiny.npz"
    np.savez(npz, x=np.zeros((8, 4), dtype=np.float32))
    onnx = hostile.onnx_memory_bomb(folder / "tiny.onnx", elements=1024)
    png = hostile.image_bytes("L", (8, 8), "PNG")
    images = hostile.zip_with_entries(folder / "tiny.zip", {"a.png": png})
    return {
        "npz": validate("dataset", "npz", npz)["peak"],
        "onnx": validate("teacher", "onnx", onnx)["peak"],
        "image_zip": validate("dataset", "image_zip", images)["peak"],
    }


def test_a_small_zip_holding_a_2_gib_png_is_refused_in_little_memory(
    tmp_path: Path, baseline: dict[str, int]
) -> None:
    path = hostile.zip_with_inflating_member(
        tmp_path / "bomb.zip", "a.png", 2 * 1024 * MiB, head=b"\x89PNG\r\n\x1a\n"
    )
    assert path.stat().st_size < 10 * MiB
    result = validate("dataset", "image_zip", path)
    assert result["error"]["code"] == ErrorCode.ARCHIVE_TOO_LARGE, result
    assert result["peak"] - baseline["image_zip"] < EXTRA_BUDGET, (result, baseline)


def test_a_big_image_member_is_refused_by_its_declared_size_before_it_is_read(
    tmp_path: Path,
) -> None:
    """Stored, not compressed: the ratio cannot catch it, the per-image cap does."""
    member = b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * MiB)
    path = hostile.zip_with_entries(tmp_path / "big.zip", {"a.png": member})
    result = validate("dataset", "image_zip", path, max_image_pixels="4096")
    assert result["error"]["code"] == ErrorCode.TOO_LARGE, result


def test_a_member_named_png_that_is_not_one_is_refused_from_its_first_bytes(
    tmp_path: Path,
) -> None:
    path = hostile.zip_with_inflating_member(tmp_path / "fake.zip", "a.png", 512 * 1024)
    with pytest.raises(UserError) as caught:
        inspect_dataset(path, "image_zip")
    assert caught.value.code == ErrorCode.UNSUPPORTED_IMAGE


def test_an_npz_inflating_to_1_gib_is_refused_in_little_memory(
    tmp_path: Path, baseline: dict[str, int]
) -> None:
    path = hostile.npz_inflating(tmp_path / "bomb.npz", 1024 * MiB)
    assert path.stat().st_size < 10 * MiB
    result = validate("dataset", "npz", path)
    assert result["error"]["code"] == ErrorCode.ARCHIVE_TOO_LARGE, result
    assert result["peak"] - baseline["npz"] < EXTRA_BUDGET, (result, baseline)


def test_a_compressed_npz_of_real_data_is_accepted(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = tmp_path / "digits.npz"
    np.savez_compressed(path, x=digits.data.astype(np.float32), y=digits.target)
    result = validate("dataset", "npz", path)
    assert result["error"] is None and result["info"]["num_samples"] == 1797, result


def test_an_onnx_teacher_that_allocates_2_gib_is_too_large(
    tmp_path: Path, baseline: dict[str, int]
) -> None:
    path = hostile.onnx_memory_bomb(tmp_path / "bomb.onnx")
    assert path.stat().st_size < 10_000
    result = validate("teacher", "onnx", path)
    assert result["error"]["code"] == ErrorCode.TOO_LARGE, result
    assert result["peak"] - baseline["onnx"] < EXTRA_BUDGET, (result, baseline)


def test_a_small_onnx_teacher_is_accepted(tmp_path: Path) -> None:
    path = hostile.onnx_memory_bomb(tmp_path / "fine.onnx", elements=1024)
    result = validate("teacher", "onnx", path)
    assert result["error"] is None and result["info"]["num_classes"] == 3, result


def test_the_archive_caps_are_the_operators_settings(tmp_path: Path) -> None:
    png = hostile.image_bytes("L", (8, 8), "PNG")
    path = hostile.zip_with_entries(tmp_path / "three.zip", {f"{i}.png": png for i in range(3)})
    assert validate("dataset", "image_zip", path)["info"]["num_samples"] == 3
    capped = validate("dataset", "image_zip", path, max_archive_entries="2")
    assert capped["error"]["code"] == ErrorCode.TOO_MANY_ENTRIES
    tiny = validate("dataset", "image_zip", path, max_image_pixels="63")
    assert tiny["error"]["code"] == ErrorCode.IMAGE_TOO_LARGE
