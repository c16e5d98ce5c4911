"""Load an uploaded teacher behind the guards and describe it.

Formats: torch.export archives (.pt2, verified record by record before torch sees them),
ONNX (single file, run by onnxruntime on CPU) and TorchScript (no safe loader exists, so
only when the operator turns it on). Every load ends with one dry run on a small seeded
batch, which also decides which output holds the class scores and what kind they are.
"""

import math
import re
import shutil
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.contracts import EngineLimits
from core.errors import ErrorCode
from engine.errors import UserError
from engine.guard import ArchiveLimits, verify_pt2
from engine.teacher_outputs import (
    OutputInfo,
    as_tensor,
    describe,
    detect_kind,
    flatten_outputs,
    pick_output,
    to_scores,
)
from engine.tokens import (
    TOKEN_DTYPES,
    TokenInput,
    dry_run_tokens,
    onnx_vocab_size,
    program_vocab_size,
    role,
    split_inputs,
)

TEACHER_FORMATS = ("onnx", "torch_export", "torchscript", "hf")
# Dynamic non-batch dims get this size in the dry run: a guess that fully convolutional
# networks accept; the real size comes from the dataset later.
_DRY_RUN_DIM = 32
# Row 0 is zeros, the others uniform in [0, 1): several rows to tell probabilities from
# logits by, seeded so that a teacher validates the same way every time.
_DRY_RUN_BATCH = 4
_DRY_RUN_SEED = 0
_ONNX_INTRA_OP_THREADS = 2  # workers × threads must stay within the cores

# Runs the teacher's graph on one batch: every output by name (None), or only the named one.
RunOutputs = Callable[[torch.Tensor, str | None], dict[str, Any]]


class Teacher:
    """A frozen classifier: `teacher(x)` returns float32 scores [N, num_classes], numbers
    whose softmax is the teacher's distribution (its logits, or log p for a teacher that
    outputs probabilities: see teacher_outputs.py). Which output and which kind is decided
    by the dry run in `load_teacher`, or by the upload's `output_name` and `output_kind`.

    A teacher exported with a fixed batch size (say 1) still takes any N: `__call__` feeds
    it chunks of exactly that size, padding the last chunk with zeros and dropping the
    padded rows' outputs. Re-tracing would need the original Python code, which we lack.
    """

    def __init__(
        self,
        *,
        run: RunOutputs,
        module: torch.nn.Module | None,
        format: str,
        input_shape: list[int | None],
        input_dtype: str,
        parameters: int | None,
        static_batch: int | None,
        declared_types: dict[str, str] | None = None,
        token_inputs: list[TokenInput] | None = None,
        vocab_size: int | None = None,
    ) -> None:
        self._run = run
        self._graph = module
        self.module = module  # after the dry run: the graph reduced to the scores
        self.format = format
        self.input_shape = input_shape
        self.input_dtype = input_dtype
        self.parameters = parameters
        self.static_batch = static_batch
        self.declared_types = declared_types or {}
        # Token teachers: input_shape is the engine's [None, K, L] (K inputs stacked), the
        # dtype the one every batch is cast to before the runtime splits it (tokens.py).
        self.token_inputs = token_inputs
        self.vocab_size = vocab_size
        self.input_kind = "tensor" if token_inputs is None else "tokens"
        self.task = "classification"
        # A Hugging Face folder's: its position embeddings (the longest sequence it takes)
        # and the tokenizer.json it came with; the unpacked folder lives with the teacher.
        self.max_positions: int | None = None
        self.tokenizer_path: Path | None = None
        # Set by the dry run (_dry_run → choose).
        self.num_classes = 0
        self.outputs: list[OutputInfo] = []
        self.output_name = "output"
        self.output_kind = "logits"
        self.output_reason = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(getattr(torch, self.input_dtype))
            if self.static_batch is None:
                return self._scores(x)
            chunks = [self._scores_padded(part) for part in torch.split(x, self.static_batch)]
            return torch.cat(chunks)

    def run_outputs(self, x: torch.Tensor) -> dict[str, Any]:
        """Every output of the graph on one batch, as the runtime returned it."""
        with torch.inference_mode():
            return self._run(x.to(getattr(torch, self.input_dtype)), None)

    def choose(
        self, outputs: list[OutputInfo], name: str, kind: str, classes: int, reason: str
    ) -> None:
        self.outputs, self.output_name, self.output_kind = outputs, name, kind
        self.num_classes, self.output_reason = classes, reason
        if self._graph is not None:
            graph = self._graph
            if self.token_inputs is not None:
                graph = TokenCall(graph, self.token_inputs)
            self.module = ScoresModule(graph, name, kind, getattr(torch, self.input_dtype))

    def public_inputs(self) -> list[dict[str, Any]]:
        """Every input (name, dtype, shape with None for dynamic dimensions)."""
        if self.token_inputs is not None:
            return [spec.public() for spec in self.token_inputs]
        return [{"name": "input", "dtype": self.input_dtype, "shape": self.input_shape}]

    def to(self, device: str | torch.device) -> "Teacher":
        # ONNX teachers run on onnxruntime's CPU provider; their outputs follow the input.
        if self.module is not None:
            self.module.to(device)
        return self

    def _scores_padded(self, part: torch.Tensor) -> torch.Tensor:
        rows = part.shape[0]
        assert self.static_batch is not None
        if rows < self.static_batch:
            padding = part.new_zeros((self.static_batch - rows, *part.shape[1:]))
            part = torch.cat([part, padding])
        return self._scores(part)[:rows]

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        value = self._run(x, self.output_name).get(self.output_name)
        out = as_tensor(value)
        if self.task == "language_model":
            if out is None or out.ndim != 3 or list(out.shape[:2]) != [x.shape[0], x.shape[-1]]:
                shape = list(out.shape) if out is not None else type(value).__name__
                raise UserError(
                    ErrorCode.BAD_OUTPUT,
                    f"The language model's output {self.output_name!r} must be one "
                    f"[N, L, vocab] tensor; it returned {shape}.",
                )
        elif out is None or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = list(out.shape) if out is not None else type(value).__name__
            raise UserError(
                ErrorCode.BAD_OUTPUT,
                f"The teacher's output {self.output_name!r} must be one [N, classes] tensor; "
                f"it returned {shape}.",
            )
        if not out.is_floating_point():
            raise UserError(ErrorCode.BAD_OUTPUT, "The teacher's output is not floating point.")
        return to_scores(out, self.output_kind).to(x.device)


class TokenCall(nn.Module):
    """A program with K named integer inputs called on one stacked batch ``[N, K, L]``."""

    def __init__(self, graph: nn.Module, inputs: list[TokenInput]) -> None:
        super().__init__()
        self.graph, self.inputs = graph, inputs

    def forward(self, x: torch.Tensor) -> Any:
        return self.graph(*split_inputs(x, self.inputs))


class ScoresModule(nn.Module):
    """A loaded program reduced to its chosen output, as scores: what online soft labels
    call on every step (no chunking, no copies through the Teacher wrapper)."""

    def __init__(self, graph: nn.Module, name: str, kind: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.graph, self.name, self.kind, self.dtype = graph, name, kind, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = flatten_outputs(self.graph(x.to(self.dtype)))[self.name]
        return to_scores(out, self.kind)


def inspect_teacher(
    path: str | Path,
    fmt: str,
    *,
    allow_torchscript: bool = False,
    output_name: str | None = None,
    output_kind: str = "auto",
    limits: EngineLimits | None = None,
) -> dict[str, Any]:
    """Load the teacher under the guards, run it once and describe it."""
    teacher = load_teacher(
        path,
        fmt,
        allow_torchscript=allow_torchscript,
        output_name=output_name,
        output_kind=output_kind,
        limits=ArchiveLimits.for_teachers(limits),
    )
    inputs = teacher.public_inputs()
    folder: dict[str, Any] = {}
    if teacher.tokenizer_path is not None:
        from engine.tokenizer import inspect_tokenizer

        # The folder's tokenizer.json becomes the teacher's: described here, and its text
        # handed to the worker to store (its size was capped when the folder was unpacked).
        folder = {
            "tokenizer": inspect_tokenizer(teacher.tokenizer_path, teacher.vocab_size),
            "tokenizer_json": teacher.tokenizer_path.read_text("utf-8"),
        }
    return {
        **folder,
        # input_shape and input_dtype describe the first input; inputs, every one.
        "input_shape": inputs[0]["shape"],
        "input_dtype": inputs[0]["dtype"],
        "inputs": inputs,
        "input_kind": teacher.input_kind,
        "task": teacher.task,
        "vocab_size": teacher.vocab_size,
        "num_classes": teacher.num_classes,
        "parameters": teacher.parameters,
        "outputs": [info.public() for info in teacher.outputs],
        "output_name": teacher.output_name,
        "output_kind": teacher.output_kind,
        "output_reason": teacher.output_reason,
    }


def load_teacher(
    path: str | Path,
    fmt: str,
    *,
    allow_torchscript: bool = False,
    device: str = "cpu",
    limits: ArchiveLimits | None = None,
    output_name: str | None = None,
    output_kind: str | None = "auto",
) -> Teacher:
    """Return a ready Teacher or raise UserError; nothing in the file runs before it is vetted.

    ``output_name`` and ``output_kind`` ("auto" or None: decided by the dry run) say which
    output holds the class scores and what they are."""
    path = Path(path)
    if fmt == "torch_export":
        teacher = _load_torch_export(path, limits or ArchiveLimits())
    elif fmt == "onnx":
        teacher = _load_onnx(path)
    elif fmt == "torchscript":
        teacher = _load_torchscript(path, allow_torchscript)
    elif fmt == "hf":
        teacher = _load_hf(path, limits or ArchiveLimits())
    else:
        raise UserError(ErrorCode.UNSUPPORTED_FORMAT, f"Teachers must be one of {TEACHER_FORMATS}.")
    _dry_run(teacher, output_name or None, output_kind or "auto")
    return teacher.to(device)


def _run_module(module: nn.Module) -> RunOutputs:
    def run(x: torch.Tensor, name: str | None) -> dict[str, Any]:
        return flatten_outputs(module(x))

    return run


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
    if not values or not all(isinstance(value, torch.Tensor) for value in values):
        raise UserError(ErrorCode.BAD_INPUTS, "The teacher must take tensor inputs.")
    module = program.module()
    parameters = sum(t.numel() for t in program.state_dict.values() if t.is_floating_point())
    described = [
        (node.name, _static_dims(value.shape), _dtype_name(value.dtype))
        for node, value in zip(placeholders, values, strict=True)
    ]
    tokens = _token_inputs(described)
    if tokens is not None:
        vocab = program_vocab_size(program, [s.name for s in tokens if role(s.name) == "ids"])
        call = TokenCall(module, tokens)
        return _token_teacher(_run_module(call), module, "torch_export", tokens, parameters, vocab)
    if len(values) != 1:
        raise UserError(
            ErrorCode.BAD_INPUTS,
            "A teacher with several inputs must take integer token inputs of shape [N, L].",
        )
    example = values[0]
    dims = _static_dims(example.shape)
    return Teacher(
        run=_run_module(module),
        module=module,
        format="torch_export",
        input_shape=[None, *dims[1:]],
        input_dtype=_dtype_name(example.dtype),
        parameters=parameters,
        static_batch=dims[0],
    )


def _load_hf(path: Path, limits: ArchiveLimits) -> Teacher:
    """A Hugging Face model folder (``hf.py``: vetted, unpacked into the sandbox's tmp,
    loaded by its allow-listed class from safetensors), as a token teacher."""
    from engine import hf

    folder = hf.unpack_to_temp(path, limits)
    holder = folder.path.parent
    try:
        model = hf.load_model(folder)
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    names = hf.input_names(model, folder.task)
    tokens = [TokenInput(name, "int64", None) for name in names]
    call = hf.HFCall(model, names)
    parameters = sum(p.numel() for p in model.parameters())
    vocab = getattr(model.config, "vocab_size", None)
    teacher = _token_teacher(
        _run_module(TokenCall(call, tokens)), call, "hf", tokens, parameters, vocab
    )
    teacher.task = folder.task
    positions = getattr(model.config, "max_position_embeddings", None)
    teacher.max_positions = int(positions) if isinstance(positions, int) else None
    teacher.tokenizer_path = folder.tokenizer
    # The unpacked folder (its tokenizer.json is read later) goes when the teacher goes.
    weakref.finalize(teacher, shutil.rmtree, holder, True)
    return teacher


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
        run=_run_module(module),
        module=module,
        format="torchscript",
        input_shape=[None, *sizes[1:]],
        input_dtype="float32",
        parameters=sum(t.numel() for t in tensors if t.is_floating_point()),
        static_batch=None,
    )


def _static_dims(shape: Any) -> list[int | None]:
    return [dim if isinstance(dim, int) else None for dim in shape]


def _token_inputs(described: list[tuple[str, list[int | None], str]]) -> list[TokenInput] | None:
    """Token inputs when every input is an integer [N, L] tensor, else None."""
    if not all(len(dims) == 2 and dtype in TOKEN_DTYPES for _, dims, dtype in described):
        return None
    lengths = {dims[1] for _, dims, _ in described}
    if len(lengths) != 1:
        raise UserError(
            ErrorCode.BAD_INPUTS, "The teacher's token inputs must share one sequence length."
        )
    return [TokenInput(name, dtype, dims[1]) for name, dims, dtype in described]


def _token_teacher(
    run: RunOutputs,
    module: nn.Module | None,
    fmt: str,
    tokens: list[TokenInput],
    parameters: int | None,
    vocab: int | None,
    declared_types: dict[str, str] | None = None,
) -> Teacher:
    if all(role(spec.name) != "ids" for spec in tokens):
        raise UserError(ErrorCode.BAD_INPUTS, "The teacher's integer inputs include no token ids.")
    return Teacher(
        run=run,
        module=module,
        format=fmt,
        input_shape=[None, len(tokens), tokens[0].length],
        input_dtype="int64",
        parameters=parameters,
        static_batch=None,
        declared_types=declared_types,
        token_inputs=tokens,
        vocab_size=vocab,
    )


def _load_onnx(path: Path) -> Teacher:
    session, described, parameters, vocab = _open_onnx(path)
    names = [output.name for output in session.get_outputs()]
    declared = {o.name: _onnx_type_name(o.type) for o in session.get_outputs()}
    tokens = _token_inputs(described)
    if tokens is not None:

        def run_tokens(x: torch.Tensor, name: str | None) -> dict[str, Any]:
            parts = split_inputs(x.detach().cpu(), tokens)
            feed = {spec.name: part.numpy() for spec, part in zip(tokens, parts, strict=True)}
            wanted = names if name is None else [name]
            return dict(zip(wanted, session.run(wanted, feed), strict=True))

        return _token_teacher(run_tokens, None, "onnx", tokens, parameters, vocab, declared)
    if len(described) != 1:
        raise UserError(
            ErrorCode.BAD_INPUTS,
            "A teacher with several inputs must take integer token inputs of shape [N, L].",
        )
    input_name, dims, dtype = described[0]
    numpy_dtype = np.dtype(dtype)

    def run(x: torch.Tensor, name: str | None) -> dict[str, Any]:
        array = x.detach().cpu().numpy().astype(numpy_dtype, copy=False)
        wanted = names if name is None else [name]
        return dict(zip(wanted, session.run(wanted, {input_name: array}), strict=True))

    return Teacher(
        run=run,
        module=None,
        format="onnx",
        input_shape=[None, *dims[1:]],
        input_dtype=dtype,
        parameters=parameters,
        static_batch=dims[0],
        declared_types=declared,
    )


def _onnx_type_name(ort_type: str) -> str:
    """onnxruntime's 'seq(map(int64,tensor(float)))' as 'seq(map(int64,float))'."""
    return re.sub(r"tensor\((\w+)\)", r"\1", ort_type)


def _dry_run(teacher: Teacher, output_name: str | None, output_kind: str) -> None:
    """Run the teacher once on a small seeded batch, then pick its scores output and kind."""
    rows = teacher.static_batch or _DRY_RUN_BATCH
    shape = [rows, *(dim or _DRY_RUN_DIM for dim in teacher.input_shape[1:])]
    if teacher.max_positions is not None and teacher.input_shape[-1] is None:
        shape[-1] = max(2, min(shape[-1], teacher.max_positions))
    if teacher.token_inputs is not None:
        x = dry_run_tokens(teacher.token_inputs, rows, shape[-1], teacher.vocab_size, _DRY_RUN_SEED)
    elif not teacher.input_dtype.startswith(("float", "bfloat")):
        raise UserError(
            ErrorCode.UNSUPPORTED_INPUT,
            f"The teacher takes {teacher.input_dtype} input; only floating-point inputs "
            "or integer token inputs [N, L] work.",
        )
    else:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(_DRY_RUN_SEED))
        x[0] = 0.0
    try:
        raw = teacher.run_outputs(x)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            ErrorCode.DRY_RUN_FAILED,
            f"The teacher failed on inputs of shape {shape}: {_first_line(exc)}",
        ) from exc
    if teacher.task == "language_model":
        _choose_next_token_logits(teacher, raw, rows, shape[-1])
        return
    declared = teacher.declared_types
    outputs = [describe(name, value, rows, declared.get(name)) for name, value in raw.items()]
    if teacher.token_inputs is not None and _language_model(
        teacher, raw, outputs, rows, shape[-1], output_name, output_kind
    ):
        return
    info, why_output = pick_output(outputs, output_name)
    out = as_tensor(raw[info.name])
    assert out is not None  # pick_output only picks float tensors
    if not torch.isfinite(out).all():
        raise UserError(
            ErrorCode.BAD_OUTPUT,
            f"The teacher's output {info.name!r} on the dry run is not finite.",
        )
    kind, why_kind = detect_kind(info, out, output_kind)
    reason = f"{info.name!r}: {why_output}; {kind}: {why_kind}"
    teacher.choose(outputs, info.name, kind, int(out.shape[1]), reason)


def _choose_next_token_logits(
    teacher: Teacher, raw: dict[str, Any], rows: int, length: int
) -> None:
    """A language model's output: next-token logits ``[N, L, vocab]``, finite."""
    out = as_tensor(raw.get("logits"))
    if out is None or out.ndim != 3 or tuple(out.shape[:2]) != (rows, length):
        shape = list(out.shape) if out is not None else None
        raise UserError(
            ErrorCode.BAD_OUTPUT,
            f"A language model must return logits [N, L, vocab]; this one returned {shape}.",
        )
    if not torch.isfinite(out).all():
        raise UserError(ErrorCode.BAD_OUTPUT, "The teacher's logits on the dry run are not finite.")
    outputs = [describe(name, value, rows) for name, value in raw.items()]
    teacher.outputs, teacher.output_name, teacher.output_kind = outputs, "logits", "logits"
    teacher.num_classes = int(out.shape[-1])
    teacher.output_reason = "'logits': the language model's next-token logits [N, L, vocab]"
    vocab = teacher.num_classes
    if teacher.vocab_size is None or teacher.vocab_size > vocab:
        teacher.vocab_size = vocab


def _language_model(
    teacher: Teacher,
    raw: dict[str, Any],
    outputs: list[OutputInfo],
    rows: int,
    length: int,
    output_name: str | None,
    output_kind: str,
) -> bool:
    """A token teacher whose scores are one float ``[N, L, vocab]`` output (a sequence axis
    as long as the input, a vocabulary axis): a language model. The output named
    ``output_name``, else the one named ``logits``, else the only such output when no
    ``[N, classes]`` output competes. Sets the teacher up and returns True when it is one."""
    found: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        out = as_tensor(value)
        if (
            out is not None
            and out.is_floating_point()
            and out.ndim == 3
            and list(out.shape[:2]) == [rows, length]
            and out.shape[2] >= 2
        ):
            found[name] = out
    if output_name:
        chosen = output_name if output_name in found else None
        why = f"output_name {output_name!r} was given at upload"
    elif "logits" in found:
        chosen, why = "logits", "the output named 'logits'"
    elif len(found) == 1 and not any(info.scores for info in outputs):
        chosen, why = next(iter(found)), "the only float [N, L, vocab] output"
    else:
        chosen, why = None, ""
    if chosen is None:
        return False
    out = found[chosen]
    if not torch.isfinite(out).all():
        raise UserError(
            ErrorCode.BAD_OUTPUT,
            f"The teacher's output {chosen!r} on the dry run is not finite.",
        )
    info = next(o for o in outputs if o.name == chosen)
    kind, why_kind = detect_kind(info, out, output_kind)
    vocab = int(out.shape[2])
    teacher.task = "language_model"
    if teacher.vocab_size is None or teacher.vocab_size > vocab:
        teacher.vocab_size = vocab
    reason = (
        f"{chosen!r}: {why} (a language model: [N, L, vocab], vocab {vocab}); {kind}: {why_kind}"
    )
    teacher.choose(outputs, chosen, kind, vocab, reason)
    return True


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _open_onnx(
    path: Path,
) -> tuple[Any, list[tuple[str, list[int | None], str]], int, int | None]:
    """Vet an ONNX file and open an onnxruntime CPU session on its bytes.

    Returns (session, every input as (name, dims with None for dynamic ones, dtype),
    parameter count, the embedding's vocabulary size when the token ids feed one).
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
    if not inputs or not all(value.type.HasField("tensor_type") for value in inputs):
        raise UserError(ErrorCode.BAD_INPUTS, "The teacher must take tensor inputs.")
    described: list[tuple[str, list[int | None], str]] = []
    for value in inputs:
        tensor_type = value.type.tensor_type
        dims: list[int | None] = [
            dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
            for dim in tensor_type.shape.dim
        ]
        if not dims:
            raise UserError(
                ErrorCode.BAD_INPUTS, "The teacher's input has no shape (not even a batch)."
            )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        described.append((value.name, dims, dtype))
    ids = [name for name, _, _ in described if role(name) == "ids"]
    vocab = onnx_vocab_size(model, ids)
    parameters = sum(math.prod(tensor.dims) for tensor in model.graph.initializer)
    parameters += _ml_parameters(model)

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
    return session, described, parameters, vocab


def _ml_parameters(model: Any) -> int:
    """Learned numbers that ai.onnx.ml operators keep in float attributes, not initializers:
    a tree ensemble's thresholds, leaf values and base values."""
    total = 0
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml":
            continue
        for attribute in node.attribute:
            total += len(attribute.floats)
            if attribute.HasField("t") and attribute.t.data_type in _FLOAT_TENSOR_TYPES:
                total += math.prod(attribute.t.dims)
    return total


_FLOAT_TENSOR_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


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
