"""Hostile teacher uploads are refused with a UserError, and no payload ever runs."""

import warnings
from pathlib import Path

import pytest
import torch

from engine.errors import UserError
from engine.guard import ArchiveLimits
from engine.teachers import load_teacher
from tests.engine import hostile


@pytest.fixture(scope="module")
def real_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    return hostile.save_pt2(hostile.MLP(), torch.zeros(4, 64), folder / "mlp.pt2", dynamic=True)


def refused(path: Path, fmt: str = "torch_export", **options: object) -> str:
    with pytest.raises(UserError) as caught:
        load_teacher(path, fmt, **options)  # type: ignore[arg-type]
    return caught.value.code


def test_the_unmodified_archive_loads(real_pt2: Path) -> None:
    assert load_teacher(real_pt2, "torch_export").num_classes == 10


def test_pickle_payload_in_a_use_pickle_weight_never_runs(real_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = hostile.pt2_with_pickled_weight(real_pt2, tmp_path / "evil.pt2", marker)
    assert refused(path) == "unsafe_pickle"
    assert not marker.exists()


def test_pickle_payload_in_sample_inputs_never_runs(real_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = hostile.pt2_with_pickled_sample_inputs(real_pt2, tmp_path / "evil.pt2", marker)
    assert refused(path) == "unsafe_pickle"
    assert not marker.exists()


def test_code_in_a_symbolic_shape_never_runs(real_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = hostile.pt2_with_sympy_payload(real_pt2, tmp_path / "evil.pt2", marker)
    assert refused(path) == "unsafe_expression"
    assert not marker.exists()


def test_opaque_pickled_constant_is_refused(real_pt2: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = hostile.pt2_with_opaque_constant(real_pt2, tmp_path / "evil.pt2", marker)
    assert refused(path) == "unsafe_constant"
    assert not marker.exists()


@pytest.mark.parametrize(
    "record", ["data/aotinductor/model/model.so", "extra/notes.txt", "data/weights/model.pt"]
)
def test_unknown_record_kinds_are_refused(real_pt2: Path, tmp_path: Path, record: str) -> None:
    path = hostile.pt2_with_extra_member(real_pt2, tmp_path / "extra.pt2", record)
    assert refused(path) == "unknown_member"


@pytest.mark.parametrize(
    "target", ["torch.os.system", "builtins.eval", "torch.ops.aten.from_file.default", "#x:y"]
)
def test_graph_calling_a_non_aten_function_is_refused(
    real_pt2: Path, tmp_path: Path, target: str
) -> None:
    path = hostile.pt2_with_graph_target(real_pt2, tmp_path / "target.pt2", target)
    assert refused(path) == "unsupported_operator"


@pytest.mark.parametrize(
    ("name", "code"),
    [("../evil", "archive_traversal"), ("/abs/evil", "archive_traversal"), ("a/b", "bad_archive")],
)
def test_archive_with_bad_paths_is_refused(tmp_path: Path, name: str, code: str) -> None:
    path = hostile.zip_with_entries(
        tmp_path / "bad.pt2", {"model/archive_format": b"pt2", name: b"x"}
    )
    assert refused(path) == code


def test_archive_with_a_symlink_is_refused(tmp_path: Path) -> None:
    entries = {"model/archive_format": b"pt2", "model/link": b"/etc/passwd"}
    path = hostile.zip_with_entries(tmp_path / "link.pt2", entries, links=("model/link",))
    assert refused(path) == "archive_link"


def test_entry_count_bomb_is_refused(tmp_path: Path) -> None:
    entries = {f"model/e{index}": b"" for index in range(50)}
    path = hostile.zip_with_entries(tmp_path / "many.pt2", entries)
    with pytest.raises(UserError) as caught:
        load_teacher(path, "torch_export", limits=ArchiveLimits(max_entries=20))
    assert caught.value.code == "too_many_entries"


def test_onnx_external_data_outside_the_upload_is_refused(tmp_path: Path) -> None:
    path = hostile.onnx_with_external_data(tmp_path / "ext.onnx", "../../etc/passwd")
    assert refused(path, "onnx") == "external_data"


def test_onnx_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x08\x07garbage that is not a model")
    assert refused(path, "onnx") == "bad_teacher"


def test_torchscript_is_refused_unless_enabled(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*jit.*")
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(path))
    assert refused(path, "torchscript") == "torchscript_disabled"


@pytest.mark.parametrize(
    "build", [hostile.pt2_with_cuda_sample_inputs, hostile.pt2_with_cuda_pickled_weight]
)
def test_tensors_claiming_cuda_are_refused_before_any_unsafe_load(
    real_pt2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: object
) -> None:
    """torch.export.load would retry such sample inputs with torch.load(weights_only=False):
    the guard refuses the file, and no torch.load call without weights_only=True happens."""
    calls: list[object] = []
    real_load = torch.load

    def recording_load(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", recording_load)
    path = build(real_pt2, tmp_path / "cuda.pt2")  # type: ignore[operator]
    assert refused(path) == "unsafe_location"
    assert calls and all(weights_only is True for weights_only in calls)
