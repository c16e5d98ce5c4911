"""Export: the student alone (never a wrapper) as torch.export .pt2, ONNX and safetensors,
and the ONNX file's deployable variants, fp16 and int8.

Both graph formats take a dynamic batch dimension. safetensors comes with a JSON config
(also embedded in the file's metadata) that rebuilds the module from the registry. Every
file is written atomically and checked against the PyTorch student on a real batch before
anything is published (``verify_exports``): a file whose logits differ from the student's by
more than ``RTOL`` of their scale *and* that changes a prediction is refused. A difference
that changes no prediction is recorded in the report, never a failure: kernels differ by
float32 rounding, which grows with the logits' size, and an absolute bound that ignores the
scale failed a finished 600 s job over 1.09e-4.

The variants are made from the fp32 ONNX file and keep its float32 input and output, so they
drop in for it: ``onnx_fp16`` by ONNX Runtime's float16 converter (casts at the edges),
``onnx_int8`` by ONNX Runtime's static quantization (QDQ, int8 weights per output channel,
uint8 activations) calibrated on transfer samples. They approximate the student by design:
the check is that they run and give finite logits of the right shape; what they cost in
agreement with the teacher is measured on the eval set and reported (``stages.measure_variants``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from core.atomic import atomic_write
from engine.evaluate import Predict
from engine.students import build_student, config_from_dict, config_to_dict
from engine.students.text import TokenInterface, TokenStudent
from engine.tokens import TokenInput, split_inputs

# max |exported − PyTorch| / max(1, max |PyTorch logit|): fp32 kernels differ by about
# 1e-6 of the scale; 1e-4 leaves room for a deep student's accumulated rounding.
RTOL = 1e-4
FILE_NAMES = {
    "torch_export": "student.pt2",
    "onnx": "student.onnx",
    "safetensors": "student.safetensors",
    "onnx_fp16": "student.fp16.onnx",
    "onnx_int8": "student.int8.onnx",
    "config": "student.json",
}
VARIANTS = ("onnx_fp16", "onnx_int8")  # made from the fp32 ONNX file
ONNX_FORMATS = ("onnx", *VARIANTS)
CALIBRATION_BATCH = 32
MAX_BATCH = 1 << 20
INPUT_NAME, OUTPUT_NAME = "input", "logits"


MAX_SEQUENCE = 1 << 16
_ORT_INT = {"tensor(int64)": "int64", "tensor(int32)": "int32"}


class ExportError(RuntimeError):
    """An exported file that does not reproduce the student: a bug, never published."""


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the known, harmless noise of the ONNX exporter, and only that.

    - FutureWarning from torch's own pytree code (``LeafSpec`` deprecation, torch 2.13);
    - log lines about torchvision ops it skips (we do not use torchvision);
    - the note that axes sharing one ``Dim`` keep one name (token inputs do, on purpose).
    """
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
            )
            # Token inputs share their batch and sequence axes: one name for each is the point.
            warnings.filterwarnings(
                "ignore", message=r"# The axis name: .* will not be used", category=UserWarning
            )
            yield
    finally:
        registration.setLevel(level)


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export_student(
    model: nn.Module,
    name: str,
    config: Any,
    example: torch.Tensor,
    outdir: Path,
    formats: Sequence[str],
    calibration: torch.Tensor | None = None,
) -> dict[str, Path]:
    """Write the asked formats (and the JSON config) into ``outdir``; return their paths.

    ``example`` is a real batch of at least two samples (size 1 would be specialised).
    ``calibration``: transfer samples for ``onnx_int8`` (default: ``example``). A variant
    needs the fp32 ONNX file, which is then written too.
    """
    model = model.cpu().float().eval()
    example = example.cpu().float()
    if len(example) < 2:
        example = example.repeat(2, *([1] * (example.dim() - 1)))
    outdir.mkdir(parents=True, exist_ok=True)
    config_json = json.dumps(config_to_dict(name, config), sort_keys=True)
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".export-") as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / FILE_NAMES["config"]).write_text(config_json)
        staged = {"config": tmp / FILE_NAMES["config"]}
        graph, args, names, dynamic = _interface(model, example)
        if "torch_export" in formats:
            path = tmp / FILE_NAMES["torch_export"]
            program = torch.export.export(graph, args, dynamic_shapes=dynamic)
            torch.export.save(program, path)
            staged["torch_export"] = path
        if any(fmt in formats for fmt in ONNX_FORMATS):
            path = tmp / FILE_NAMES["onnx"]
            with _quiet_exporter():
                torch.onnx.export(
                    graph,
                    args,
                    str(path),
                    input_names=names,
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=dynamic,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
            staged["onnx"] = path
        if "onnx_fp16" in formats:
            staged["onnx_fp16"] = to_fp16(staged["onnx"], tmp / FILE_NAMES["onnx_fp16"])
        if "onnx_int8" in formats and isinstance(model, TokenStudent):
            staged["onnx_int8"] = to_int8_dynamic(staged["onnx"], tmp / FILE_NAMES["onnx_int8"])
        elif "onnx_int8" in formats:
            samples = example if calibration is None else calibration.cpu().float()
            staged["onnx_int8"] = to_int8(staged["onnx"], tmp / FILE_NAMES["onnx_int8"], samples)
        if "safetensors" in formats:
            path = tmp / FILE_NAMES["safetensors"]
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(path), metadata={"stillhouse_student": config_json})
            staged["safetensors"] = path
        for key, path in staged.items():
            files[key] = atomic_write(outdir / path.name, functools.partial(os.replace, path))
    return files


def _interface(
    model: nn.Module, example: torch.Tensor
) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], Any]:
    """What the exported graph takes: one float tensor ``input`` with a dynamic batch, or,
    for a token student, the teacher's named integer inputs with dynamic batch and
    sequence axes (a drop-in replacement for the teacher)."""
    if not isinstance(model, TokenStudent):
        return model, (example,), [INPUT_NAME], _dynamic_batch()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # min 2: torch.export specialises a dimension of size 1; a sequence of one token still
    # runs (the graph has no length-dependent branch).
    sequence = torch.export.Dim("sequence", min=2, max=MAX_SEQUENCE)
    args = tuple(split_inputs(example, _token_specs(model)))
    dynamic = {"inputs": tuple({0: batch, 1: sequence} for _ in args)}
    return TokenInterface(model).eval(), args, list(model.names), dynamic


def _token_specs(model: TokenStudent) -> list[TokenInput]:
    return [TokenInput(n, d, None) for n, d in zip(model.names, model.dtypes, strict=True)]


def to_int8_dynamic(source: Path, target: Path) -> Path:
    """Dynamic int8 for token students: int8 weights, activations quantised per batch at run
    time. Static QDQ calibrates activation ranges on float inputs; a token graph's input is
    ids, and its embedding lookups and masks do not quantise statically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # No symbolic-shape pre-processing: it cannot follow the dynamic sequence axis through
    # the attention's reshapes, and dynamic quantization needs no activation shapes.
    with _quiet_quantizer():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def to_fp16(source: Path, target: Path) -> Path:
    """Weights and arithmetic in float16; float32 in and out (ONNX Runtime's converter)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with _quiet_quantizer():
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return target


class _Calibration:
    """ONNX Runtime's ``CalibrationDataReader``: the samples, a batch at a time."""

    def __init__(self, samples: torch.Tensor) -> None:
        array = np.ascontiguousarray(samples.numpy(), dtype=np.float32)
        self._batches = iter(
            [array[i : i + CALIBRATION_BATCH] for i in range(0, len(array), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def to_int8(source: Path, target: Path, samples: torch.Tensor) -> Path:
    """Static int8 in QDQ form: weights per output channel (int8), activations per tensor
    (uint8) with ranges calibrated (min/max) on ``samples``. The graph is first shape-inferred
    and optimised (ONNX Runtime's recommended pre-processing)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.name + ".pre.onnx")
    with _quiet_quantizer():
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            _Calibration(samples),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    prepared.unlink()
    return target


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice at INFO and WARNING through the root
    logger (pre-processing hints, float16 clamping): keep it out of the job's log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _program_token_specs(program: Any) -> list[TokenInput]:
    user = set(program.graph_signature.user_inputs)
    nodes = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    values = [n.meta["val"] for n in nodes]
    return [TokenInput("", str(v.dtype).removeprefix("torch."), None) for v in values]


def _is_token_program(program: Any) -> bool:
    specs = _program_token_specs(program)
    return all(spec.dtype in ("int64", "int32") for spec in specs)


def load_student_safetensors(path: Path, config_path: Path | None = None) -> nn.Module:
    """Rebuild a student from its safetensors file (config from the JSON or the metadata)."""
    if config_path is not None:
        config_dict = json.loads(config_path.read_text())
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            config_dict = json.loads((f.metadata() or {})["stillhouse_student"])
    name, config = config_from_dict(config_dict)
    model = build_student(name, config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def runtime_for(fmt: str, path: Path, *, threads: int | None = None) -> Predict:
    """A function that runs the exported file as an outside user would."""
    if fmt in ONNX_FORMATS:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        inputs = session.get_inputs()
        if inputs[0].name != INPUT_NAME:  # a token student: the teacher's named inputs
            specs = [TokenInput(i.name, _ORT_INT[i.type], None) for i in inputs]

            def run_tokens(x: torch.Tensor) -> torch.Tensor:
                parts = split_inputs(x.detach().cpu(), specs)
                feed = {s.name: p.numpy() for s, p in zip(specs, parts, strict=True)}
                return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0])

            return run_tokens

        def run_onnx(x: torch.Tensor) -> torch.Tensor:
            array = np.ascontiguousarray(x.detach().cpu().float().numpy())
            return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])

        return run_onnx
    if fmt == "torch_export":
        program = torch.export.load(str(path))  # our own file, just written
        module = program.module()
        if _is_token_program(program):
            specs = _program_token_specs(program)
            return lambda x: module(*split_inputs(x.cpu(), specs))
        return lambda x: module(x.cpu().float())
    if fmt == "safetensors":
        model = load_student_safetensors(path, path.with_name(FILE_NAMES["config"]))
        return lambda x: model(x.cpu().float())
    raise ValueError(f"unknown export format {fmt!r}")


def verify_exports(
    model: nn.Module, files: dict[str, Path], batch: torch.Tensor
) -> dict[str, float]:
    """Max |logit difference| of each exported file against ``model``, on ``batch`` and on
    a batch of one (the dynamic dimension).

    Raises ``ExportError`` for a file that outputs a non-finite logit where the student does
    not, or that differs by more than ``RTOL`` of the logits' scale and changes a prediction
    (argmax) on some row; a larger difference that predicts the same class is not a
    failure.

    A variant (``onnx_fp16``, ``onnx_int8``) approximates the student by design: it is
    refused only for logits of the wrong shape, or non-finite where the student's are not."""
    model = model.cpu().float().eval()
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for fmt, path in files.items():
            if fmt == "config":
                continue
            run = runtime_for(fmt, path)
            diff = 0.0
            for xb in (batch, batch[:1]):
                expected = model(xb.cpu().float())
                got = run(xb).float()
                if fmt in VARIANTS:
                    diff = max(diff, check_variant(fmt, got, expected))
                else:
                    diff = max(diff, check_logits(fmt, got, expected))
            diffs[fmt] = diff
    return diffs


def check_logits(fmt: str, got: torch.Tensor, expected: torch.Tensor) -> float:
    """``got`` against ``expected`` (both [N, ..., C]); returns the max absolute difference.
    What ``check_variant`` checks, and within ``RTOL`` of the scale or the same predictions."""
    diff = check_variant(fmt, got, expected)
    finite = torch.isfinite(expected)
    scale = max(1.0, float(expected[finite].abs().max()) if bool(finite.any()) else 0.0)
    if diff <= RTOL * scale:
        return diff
    changed = int((got.argmax(-1) != expected.argmax(-1)).sum())
    if changed:
        raise ExportError(
            f"{fmt}: exported student changes {changed} of {expected[..., 0].numel()} "
            f"predictions (logits differ by {diff:.3g}, {diff / scale:.3g} of their scale)"
        )
    return diff


def check_variant(fmt: str, got: torch.Tensor, expected: torch.Tensor) -> float:
    """A variant's logits against the student's: the shape, and finite wherever the
    student's are; returns the max absolute difference (its cost in agreement is measured
    on the eval set, not bounded here)."""
    if got.shape != expected.shape:
        raise ExportError(
            f"{fmt}: exported student outputs {list(got.shape)}, not {list(expected.shape)}"
        )
    finite = torch.isfinite(expected)
    if not bool(torch.isfinite(got)[finite].all()):
        raise ExportError(f"{fmt}: exported student outputs non-finite logits")
    return float((got - expected)[finite].abs().max()) if bool(finite.any()) else 0.0


def warm_up(outdir: str | Path) -> None:
    """Export and verify a tiny student in every format: the first export of a process pays
    for imports and the exporters' lazy set-up (about 2 s on a CPU), so a spare sandbox child
    does this before its job arrives. Writes only under ``outdir``."""
    from engine.students.mlp import MLPConfig

    config = MLPConfig(input_shape=(8,), num_classes=3, hidden=(4,))
    model = build_student("mlp", config).eval()
    example = torch.zeros(2, 8)
    formats = [fmt for fmt in FILE_NAMES if fmt != "config"]
    files = export_student(model, "mlp", config, example, Path(outdir), formats)
    verify_exports(model, files, example)
