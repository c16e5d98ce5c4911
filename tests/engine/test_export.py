"""Export: the bare student in three formats, each reproducing the PyTorch logits."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto

from core.spec import JobSpec
from engine.export import (
    VARIANTS,
    ExportError,
    check_logits,
    check_variant,
    export_student,
    load_student_safetensors,
    runtime_for,
    verify_exports,
)
from engine.progress import Reporter
from engine.stages import Context, Student, export_check_stage
from engine.students import REGISTRY, build_student

SHAPES = {
    "mlp": (64,),
    "cnn": (1, 8, 8),
    "cnn1d": (2, 40),
    "resnet": (1, 16, 16),
    "mobilenetv2": (1, 16, 16),
}
FORMATS = ["torch_export", "onnx", "safetensors"]


def _student(name: str, width: int = 4) -> tuple[torch.nn.Module, object, torch.Tensor]:
    torch.manual_seed(0)
    # mobilenetv2 at its shallowest here (a 7-block export is quick); its full depth is
    # exported in test_image_students.py.
    family = REGISTRY[name].families[-1 if name == "mobilenetv2" else 0]
    config = family(SHAPES[name], 10, width)
    model = build_student(name, config).eval()
    return model, config, torch.randn(37, *SHAPES[name])


# Text students export with the teacher's named inputs: tests/engine/test_text.py.
@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.token_families is None))
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


def test_a_file_that_changes_predictions_is_refused(tmp_path: Path) -> None:
    model, config, x = _student("mlp")
    files = export_student(model, "mlp", config, x, tmp_path, ["onnx"])
    with torch.no_grad():
        model[-1].bias[0] += 100.0  # the student moved on; the file did not
    with pytest.raises(ExportError, match="onnx: exported student changes 37 of 37 predictions"):
        verify_exports(model, files, x)


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn1d"])
def test_variants_are_smaller_onnx_files_that_follow_the_student(name: str, tmp_path: Path) -> None:
    model, config, x = _student(name, width=32)  # weights outweigh the graph's bytes
    calibration = torch.randn(200, *SHAPES[name])
    files = export_student(model, name, config, x, tmp_path, VARIANTS, calibration)
    assert set(files) == {"onnx", *VARIANTS, "config"}  # the fp32 file they come from
    verify_exports(model, files, x)
    sizes = {fmt: files[fmt].stat().st_size for fmt in ("onnx", *VARIANTS)}
    assert sizes["onnx_fp16"] < 0.75 * sizes["onnx"]
    assert sizes["onnx_int8"] < 0.75 * sizes["onnx"]
    fp16 = onnx.load(str(files["onnx_fp16"]))
    kinds = {i.data_type for i in fp16.graph.initializer}
    assert TensorProto.FLOAT16 in kinds and TensorProto.FLOAT not in kinds
    int8 = onnx.load(str(files["onnx_int8"]))
    ops = {node.op_type for node in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(i.data_type == TensorProto.INT8 for i in int8.graph.initializer)
    # Same float32 input and output as the fp32 file: a drop-in replacement.
    for variant in (fp16, int8):
        assert variant.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
        assert variant.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    xb = torch.randn(300, *SHAPES[name])
    expected = model(xb).detach()
    for fmt in VARIANTS:
        got = runtime_for(fmt, files[fmt])(xb)
        assert got.shape == expected.shape
        # Approximate by design, close on the student's own scale (random weights and
        # inputs: the worst case for int8's ranges). Measured 2026-12-08 (torch 2.13.0,
        # onnxruntime 1.32.0 and 1.31.1 alike): fp16 1e-4 of the scale for every student;
        # int8 1.7 % (mlp), 4.3 % (cnn), 2.9 % (cnn1d), where an earlier environment stayed
        # under 2 %: the cause is not found. The service measures every variant's agreement
        # in the report and flags one further than the spec's agreement margin below the
        # fp32 student's (engine/stages.py).
        scale = float(expected.abs().max())
        bound = 0.002 if fmt == "onnx_fp16" else 0.05
        assert float((got - expected).abs().mean()) < bound * scale, fmt


def test_int8_without_calibration_data_is_calibrated_on_the_example(tmp_path: Path) -> None:
    model, config, x = _student("mlp")
    files = export_student(model, "mlp", config, x, tmp_path, ["onnx_int8"])
    assert set(files) == {"onnx", "onnx_int8", "config"}
    assert runtime_for("onnx_int8", files["onnx_int8"])(x).isfinite().all()


def test_a_variant_is_refused_only_for_its_shape_or_a_non_finite_logit() -> None:
    expected = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    assert check_variant("onnx_int8", expected + 0.5, expected) == pytest.approx(0.5)
    with pytest.raises(ExportError, match="onnx_fp16: .*non-finite"):
        check_variant("onnx_fp16", torch.tensor([[1.0, float("inf")], [3.0, -1.0]]), expected)
    with pytest.raises(ExportError, match="onnx_int8: .*outputs \\[2\\]"):
        check_variant("onnx_int8", torch.tensor([1.0, 2.0]), expected)


def test_a_file_that_differs_without_changing_a_prediction_is_kept(tmp_path: Path) -> None:
    model, config, x = _student("mlp")
    files = export_student(model, "mlp", config, x, tmp_path, ["onnx"])
    with torch.no_grad():
        model[-1].bias += 1e-2  # every logit moves alike: far past RTOL, the same argmax
    diffs = verify_exports(model, files, x)
    assert diffs["onnx"] == pytest.approx(1e-2, rel=1e-3)


def test_the_tolerance_scales_with_the_logits() -> None:
    expected = torch.tensor([[1000.0, 999.99], [-3.0, 2.0]])
    # 0.02 apart: rounding at a scale of 1000 (2e-5 of it), though the first row flips.
    assert check_logits("onnx", expected + torch.tensor([[0.0, 0.02], [0, 0]]), expected) > 0
    small = expected / 1000  # the same difference at a scale of 1 flips a prediction
    with pytest.raises(ExportError, match="changes 1 of 2 predictions"):
        check_logits("onnx", small + torch.tensor([[0.0, 0.02], [0, 0]]), small)


def test_a_non_finite_logit_is_refused() -> None:
    expected = torch.tensor([[1.0, 2.0]])
    with pytest.raises(ExportError, match="non-finite"):
        check_logits("onnx", torch.tensor([[1.0, float("nan")]]), expected)


class _Branchy(torch.nn.Module):
    """Control flow on the data: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


def test_a_student_that_does_not_export_fails_before_training(tmp_path: Path) -> None:
    _, config, x = _student("mlp")
    spec = JobSpec.model_validate(
        {"teacher_ids": ["t"], "dataset_id": "d", "export_formats": ["torch_export"]}
    )
    ctx = Context(
        [], spec, torch.device("cpu"), tmp_path, None, None, Reporter(print, 1), lambda: False, 100
    )
    student = Student("mlp", config, _Branchy(), 1.0, [])
    with pytest.raises(ExportError, match="does not export"):
        export_check_stage(ctx, student, x)
    assert list(tmp_path.iterdir()) == []  # the trial files are gone
    ok = Student("mlp", config, build_student("mlp", config), 1.0, [])
    export_check_stage(ctx, ok, x)
    assert list(tmp_path.iterdir()) == [] and ctx.timings["export_check"] > 0
