"""Load an uploaded teacher behind the guards and describe it.

Formats: torch.export archives (.pt2, verified record by record before torch sees them),
ONNX (single file, run by onnxruntime on CPU) and TorchScript (no safe loader exists, so
only when the operator turns it on). Every load ends with one dry forward pass on zeros.
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ErrorCode
from worker.distill.errors import UserError
from worker.distill.guard import ArchiveLimits, verify_pt2

TEACHER_FORMATS = ("onnx", "torch_export", "torchscript")
# Dynamic non-batch dims get this size in the dry run: a guess that fully convolutional
# networks accept; the real size comes from the dataset later.
_DRY_RUN_DIM = 32
_DRY_RUN_BATCH = 2
_ONNX_INTRA_OP_THREADS = 2  # workers × threads must stay within the cores (see FACTS.md)

Forward = Callable[[torch.Tensor], torch.Tensor]


class Teacher:
    """A frozen classifier: `teacher(x)` returns float32 logits [N, num_classes].

    A teacher exported with a fixed batch size (say 1) still takes any N: `__call__` feeds
    it chunks of exactly that size, padding the last chunk with zeros and dropping the
    padded rows' outputs. Re-tracing would need the original Python code, which we lack.
    """

    def __init__(
        self,
        *,
        forward: Forward,
        module: torch.nn.Module | None,
        format: str,
        input_shape: list[int | None],
        input_dtype: str,
        parameters: int | None,
        static_batch: int | None,
    ) -> None:
        self._forward = forward
        self.module = module
        self.format = format
        self.input_shape = input_shape
        self.input_dtype = input_dtype
        self.parameters = parameters
        self.static_batch = static_batch
        self.num_classes = 0  # set by the dry run in _finish

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(getattr(torch, self.input_dtype))
            if self.static_batch is None:
                return self._run(x)
            chunks = [self._run_padded(part) for part in torch.split(x, self.static_batch)]
            return torch.cat(chunks)

    def to(self, device: str | torch.device) -> "Teacher":
        # ONNX teachers run on onnxruntime's CPU provider; their outputs follow the input.
        if self.module is not None:
            self.module.to(device)
        return self

    def _run_padded(self, part: torch.Tensor) -> torch.Tensor:
        rows = part.shape[0]
        assert self.static_batch is not None
        if rows < self.static_batch:
            padding = part.new_zeros((self.static_batch - rows, *part.shape[1:]))
            part = torch.cat([part, padding])
        return self._run(part)[:rows]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        out = self._forward(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(
                ErrorCode.BAD_OUTPUT,
                f"The teacher must return one [N, classes] tensor; it returned {shape}.",
            )
        if not out.is_floating_point():
            raise UserError(ErrorCode.BAD_OUTPUT, "The teacher's output is not floating point.")
        return out.float()


def inspect_teacher(
    path: str | Path, fmt: str, *, allow_torchscript: bool = False
) -> dict[str, Any]:
    """Load the teacher under the guards, run it once and describe it."""
    teacher = load_teacher(path, fmt, allow_torchscript=allow_torchscript)
    return {
        "input_shape": teacher.input_shape,
        "input_dtype": teacher.input_dtype,
        "num_classes": teacher.num_classes,
        "parameters": teacher.parameters,
    }


def load_teacher(
    path: str | Path,
    fmt: str,
    *,
    allow_torchscript: bool = False,
    device: str = "cpu",
    limits: ArchiveLimits | None = None,
) -> Teacher:
    """Return a ready Teacher or raise UserError; nothing in the file runs before it is vetted."""
    path = Path(path)
    if fmt == "torch_export":
        teacher = _load_torch_export(path, limits or ArchiveLimits())
    elif fmt == "onnx":
        teacher = _load_onnx(path)
    elif fmt == "torchscript":
        teacher = _load_torchscript(path, allow_torchscript)
    else:
        raise UserError(ErrorCode.UNSUPPORTED_FORMAT, f"Teachers must be one of {TEACHER_FORMATS}.")
    _dry_run(teacher)
    return teacher.to(device)


def _load_torch_export(path: Path, limits: ArchiveLimits) -> Teacher:
    verify_pt2(str(path), limits)
    try:
        with open(path, "rb") as file:
            program = torch.export.load(file)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            ErrorCode.BAD_TEACHER, f"torch.export could not load the archive: {_first_line(exc)}"
        ) from exc
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in user_inputs
    ]
    values = [node.meta.get("val") for node in placeholders]
    if len(values) != 1 or not isinstance(values[0], torch.Tensor):
        raise UserError(ErrorCode.BAD_INPUTS, "The teacher must take exactly one tensor input.")
    example = values[0]
    dims = [dim if isinstance(dim, int) else None for dim in example.shape]
    module = program.module()
    parameters = sum(t.numel() for t in program.state_dict.values() if t.is_floating_point())
    return Teacher(
        forward=module,
        module=module,
        format="torch_export",
        input_shape=[None, *dims[1:]],
        input_dtype=_dtype_name(example.dtype),
        parameters=parameters,
        static_batch=dims[0],
    )


def _load_torchscript(path: Path, allow_torchscript: bool) -> Teacher:
    if not allow_torchscript:
        raise UserError(
            ErrorCode.TORCHSCRIPT_DISABLED,
            "TorchScript files can run arbitrary code when loaded and are disabled here; "
            "upload a torch.export (.pt2) or ONNX file instead.",
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise UserError(
            ErrorCode.BAD_TEACHER, f"TorchScript load failed: {_first_line(exc)}"
        ) from exc
    inputs = list(module.graph.inputs())[1:]  # the first input is `self`
    sizes = inputs[0].type().sizes() if len(inputs) == 1 else None
    if not sizes:
        raise UserError(
            ErrorCode.UNKNOWN_INPUT_SHAPE,
            "This TorchScript file does not record its input shape; export with torch.export.",
        )
    module.eval()
    tensors = [*module.parameters(), *module.buffers()]
    return Teacher(
        forward=module,
        module=module,
        format="torchscript",
        input_shape=[None, *sizes[1:]],
        input_dtype="float32",
        parameters=sum(t.numel() for t in tensors if t.is_floating_point()),
        static_batch=None,
    )


def _load_onnx(path: Path) -> Teacher:
    session, dims, dtype, parameters = _open_onnx(path)
    input_name = session.get_inputs()[0].name
    numpy_dtype = np.dtype(dtype)

    def forward(x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().astype(numpy_dtype, copy=False)
        (out, *_) = session.run(None, {input_name: array})
        return torch.from_numpy(np.asarray(out)).to(x.device)

    return Teacher(
        forward=forward,
        module=None,
        format="onnx",
        input_shape=[None, *dims[1:]],
        input_dtype=dtype,
        parameters=parameters,
        static_batch=dims[0],
    )


def _dry_run(teacher: Teacher) -> None:
    if not teacher.input_dtype.startswith(("float", "bfloat")):
        raise UserError(
            ErrorCode.UNSUPPORTED_INPUT,
            f"The teacher takes {teacher.input_dtype} input; only floating-point inputs work.",
        )
    batch = teacher.static_batch or _DRY_RUN_BATCH
    shape = [batch, *(dim or _DRY_RUN_DIM for dim in teacher.input_shape[1:])]
    try:
        out = teacher(torch.zeros(shape))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            ErrorCode.DRY_RUN_FAILED,
            f"The teacher failed on zeros of shape {shape}: {_first_line(exc)}",
        ) from exc
    if out.shape[1] < 2:
        raise UserError(ErrorCode.BAD_OUTPUT, "The teacher must output at least 2 class scores.")
    if not torch.isfinite(out).all():
        raise UserError(ErrorCode.BAD_OUTPUT, "The teacher's output on zeros is not finite.")
    teacher.num_classes = int(out.shape[1])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _open_onnx(path: Path) -> tuple[Any, list[int | None], str, int]:
    """Vet an ONNX file and open an onnxruntime CPU session on its bytes.

    Returns (session, input dims with None for dynamic ones, input dtype, parameter count).
    """
    # Imported here: onnx and onnxruntime are only needed for ONNX teachers.
    import onnx
    import onnxruntime

    try:
        # load_external_data=False: the upload is one file; nothing else may be read.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UserError(
            ErrorCode.BAD_TEACHER, f"Not a readable ONNX model: {_first_line(exc)}"
        ) from exc
    tensors = list(_onnx_tensors(model))
    if any(_is_external(tensor) for tensor in tensors):
        raise UserError(
            ErrorCode.EXTERNAL_DATA,
            "The ONNX model refers to external data files; save it as one self-contained file.",
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise UserError(
            ErrorCode.BAD_TEACHER, f"The ONNX model is invalid: {_first_line(exc)}"
        ) from exc

    initializer_names = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializer_names]
    if len(inputs) != 1 or not inputs[0].type.HasField("tensor_type"):
        raise UserError(ErrorCode.BAD_INPUTS, "The teacher must take exactly one tensor input.")
    tensor_type = inputs[0].type.tensor_type
    dims: list[int | None] = [
        dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
        for dim in tensor_type.shape.dim
    ]
    if not dims:
        raise UserError(
            ErrorCode.BAD_INPUTS, "The teacher's input has no shape (not even a batch)."
        )
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    parameters = sum(math.prod(tensor.dims) for tensor in model.graph.initializer)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = _ONNX_INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: warnings would flood the worker log
    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise UserError(
            ErrorCode.BAD_TEACHER, f"onnxruntime cannot run it: {_first_line(exc)}"
        ) from exc
    return session, dims, dtype, parameters


def _onnx_tensors(model: Any) -> Any:
    """Every TensorProto in the model: initializers, node attributes, subgraphs, functions."""
    graphs = [model.graph]
    nodes = [node for function in model.functions for node in function.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes.extend(graph.node)
            continue
        for attribute in nodes.pop().attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            if attribute.HasField("g"):
                graphs.append(attribute.g)
            graphs.extend(attribute.graphs)


def _is_external(tensor: Any) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0
