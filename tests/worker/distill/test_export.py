"""Export: the bare student in three formats, each reproducing the PyTorch logits."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from worker.distill.export import (
    ExportError,
    export_student,
    load_student_safetensors,
    runtime_for,
    verify_exports,
)
from worker.distill.students import REGISTRY, build_student

SHAPES = {
    "mlp": (64,),
    "cnn": (1, 8, 8),
    "cnn1d": (2, 40),
    "resnet": (1, 16, 16),
    "mobilenetv2": (1, 16, 16),
}
FORMATS = ["torch_export", "onnx", "safetensors"]


def _student(name: str) -> tuple[torch.nn.Module, object, torch.Tensor]:
    torch.manual_seed(0)
    # mobilenetv2 at its shallowest here (a 7-block export is quick); its full depth is
    # exported in test_image_students.py.
    family = REGISTRY[name].families[-1 if name == "mobilenetv2" else 0]
    config = family(SHAPES[name], 10, 4)
    model = build_student(name, config).eval()
    return model, config, torch.randn(37, *SHAPES[name])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_format_reproduces_the_student_at_any_batch_size(name: str, tmp_path: Path) -> None:
    model, config, x = _student(name)
    files = export_student(model, name, config, x, tmp_path, FORMATS)
    assert set(files) == {*FORMATS, "config"}
    diffs = verify_exports(model, files, x)
    assert max(diffs.values()) <= 1e-4
    for fmt in FORMATS:
        run = runtime_for(fmt, files[fmt])
        for batch in (1, 5, 300):
            xb = torch.randn(batch, *SHAPES[name])
            assert torch.allclose(run(xb), model(xb), atol=1e-4)


def test_onnx_has_a_dynamic_batch_and_the_pt2_is_the_bare_student(tmp_path: Path) -> None:
    model, config, x = _student("cnn")
    files = export_student(model, "cnn", config, x, tmp_path, FORMATS)
    graph = onnx.load(str(files["onnx"])).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic, not fixed
    program = torch.export.load(str(files["torch_export"]))
    assert set(program.state_dict) | set(program.constants) >= {
        k for k in model.state_dict() if not k.endswith(("mean", "inv_std"))
    }
    assert len(list(program.module().parameters())) == len(list(model.parameters()))


def test_safetensors_alone_rebuilds_the_student_from_the_registry(tmp_path: Path) -> None:
    model, config, x = _student("mlp")
    files = export_student(model, "mlp", config, x, tmp_path, ["safetensors"])
    assert set(files) == {"safetensors", "config"}
    rebuilt = load_student_safetensors(files["safetensors"])  # config from the metadata
    assert torch.equal(rebuilt(x), model(x))


def test_a_file_that_does_not_reproduce_the_student_is_refused(tmp_path: Path) -> None:
    model, config, x = _student("mlp")
    files = export_student(model, "mlp", config, x, tmp_path, ["onnx"])
    with torch.no_grad():
        model[-1].bias += 1e-3  # the student moved on; the file did not
    with pytest.raises(ExportError, match="onnx"):
        verify_exports(model, files, x)
