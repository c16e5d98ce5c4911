"""Checks that run on untrusted archives and pickles before any real loader sees them.

Zip rules (every archive: .pt2, torch.save blobs inside it, .npz, image zips): no absolute
paths, no `..`, no links, no encryption, no duplicate names, entry count and total unpacked
size capped, and no member over 1 MiB inflating more than `max_ratio` times its stored size
(a 1 MB .npz whose array inflates to 1 GiB, a 2 MB zip holding a 2 GiB "image"). ZipFile
enforces each member's declared size when reading, so capping the declared sizes caps what
we decompress; `read_member` checks a member's declared size and its first bytes (streamed)
before it reads the rest. The caps are the operator's settings (`STILLHOUSE_MAX_*`, which
the worker passes to its sandboxed child).

Pickle rules: a pickle is accepted only if an opcode scan finds nothing but the globals a
plain tensor (or a tuple/dict of them) needs, and `torch.load(weights_only=True)` also
accepts it. The scan is the stricter of the two; the second keeps us aligned with torch.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import pickletools
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
else:  # imported on first use: a dataset's validation never needs it
    from engine.lazy import torch

from core.contracts import EngineLimits
from core.errors import ErrorCode
from engine.errors import UserError

_MiB = 1024 * 1024
_GiB = 1024 * _MiB
# Members this small may compress as well as they like: only big ones can be bombs.
RATIO_FREE_BYTES = 1 * _MiB


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 8 * _GiB
    max_ratio: int = EngineLimits().max_compression_ratio
    max_pickle_bytes: int = 64 * _MiB  # data.pkl of tensors is tiny: storages are separate

    @classmethod
    def for_teachers(cls, limits: EngineLimits | None) -> ArchiveLimits:
        """A teacher archive's: these defaults, at the operator's compression ratio."""
        return cls() if limits is None else cls(max_ratio=limits.max_compression_ratio)


def check_zip(
    archive: zipfile.ZipFile, limits: ArchiveLimits, *, what: str
) -> list[zipfile.ZipInfo]:
    """Return the members of `archive` after enforcing the zip rules above."""
    members = archive.infolist()
    if len(members) > limits.max_entries:
        raise UserError(
            ErrorCode.TOO_MANY_ENTRIES,
            f"{what} has {len(members)} entries; the limit is {limits.max_entries}.",
        )
    seen: set[str] = set()
    total = 0
    for member in members:
        _check_member_name(member.filename, what=what)
        if member.filename in seen:
            raise UserError(ErrorCode.ARCHIVE_DUPLICATE, f"{what} lists {member.filename!r} twice.")
        seen.add(member.filename)
        mode = member.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UserError(ErrorCode.ARCHIVE_LINK, f"{what} contains a link: {member.filename!r}.")
        if member.flag_bits & 0x1:
            raise UserError(ErrorCode.ARCHIVE_ENCRYPTED, f"{what} has an encrypted entry.")
        _check_ratio(member, limits, what=what)
        total += member.file_size
        if total > limits.max_total_bytes:
            raise UserError(
                ErrorCode.ARCHIVE_TOO_LARGE,
                f"{what} unpacks to more than {limits.max_total_bytes} bytes.",
            )
    return members


def _check_ratio(member: zipfile.ZipInfo, limits: ArchiveLimits, *, what: str) -> None:
    if member.file_size <= max(RATIO_FREE_BYTES, limits.max_ratio * member.compress_size):
        return
    raise UserError(
        ErrorCode.ARCHIVE_TOO_LARGE,
        f"{what}: {member.filename[:80]!r} inflates {member.compress_size} stored bytes to "
        f"{member.file_size}, more than {limits.max_ratio} times; store it with less "
        "compression (e.g. np.savez rather than np.savez_compressed).",
    )


def read_member(
    archive: zipfile.ZipFile,
    member: zipfile.ZipInfo,
    *,
    magic: tuple[bytes, ...],
    max_bytes: int,
    what: str,
    wrong_type: ErrorCode,
) -> bytes:
    """The member's bytes, after its declared size is checked against ``max_bytes`` and its
    first bytes, streamed, against ``magic``: a wrong type or a bomb is never read whole.
    ``wrong_type`` is the error code of a member that does not start with ``magic``."""
    if member.file_size > max_bytes:
        raise UserError(
            ErrorCode.TOO_LARGE,
            f"{what} unpacks to {member.file_size} bytes; the limit is {max_bytes}.",
        )
    with archive.open(member) as entry:
        head = entry.read(max(len(m) for m in magic))
        if not head.startswith(magic):
            raise UserError(wrong_type, f"{what} is not of an accepted type.")
        return head + entry.read(max_bytes - len(head))


def _check_member_name(name: str, *, what: str) -> None:
    if "\\" in name or "\x00" in name:
        raise UserError(ErrorCode.ARCHIVE_TRAVERSAL, f"{what} has a malformed entry name {name!r}.")
    path = PurePosixPath(name)
    is_drive = len(name) > 1 and name[1] == ":"
    if path.is_absolute() or is_drive:
        raise UserError(ErrorCode.ARCHIVE_TRAVERSAL, f"{what} has an absolute path {name!r}.")
    if ".." in path.parts:
        raise UserError(ErrorCode.ARCHIVE_TRAVERSAL, f"{what} has a path with '..': {name!r}.")


@functools.cache
def _allowed_pickle_globals() -> frozenset[str]:
    """The globals that torch.save emits for tensors, parameters and their containers
    (computed at the first pickle scanned: a dataset's validation never imports torch)."""
    import torch as module  # the module itself: dir() of the lazy stand-in lists nothing

    storages = {
        f"torch.{name}"
        for name in dir(module)
        if name.endswith("Storage") and not name.startswith(("_", "Typed", "Untyped"))
    }
    dtypes = {
        f"torch.{name}" for name in dir(module) if isinstance(getattr(module, name), module.dtype)
    }
    return frozenset(
        {
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter",
            "torch.Size",
            *storages,
            *dtypes,
        }
    )


_STRING_OPCODES = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}
# Opcodes that build objects from classes outside GLOBAL's control, or via the copyreg
# extension registry: never emitted by torch.save.
_FORBIDDEN_OPCODES = {"INST", "OBJ", "EXT1", "EXT2", "EXT4"}


def scan_pickle(data: bytes, *, what: str) -> None:
    """Reject a pickle that imports anything but tensor-rebuilding globals."""
    recent_strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in _FORBIDDEN_OPCODES:
                raise UserError(ErrorCode.UNSAFE_PICKLE, f"{what} uses the pickle opcode {name}.")
            if name == "GLOBAL":
                _check_global(str(arg).replace(" ", "."), what=what)
            elif name == "STACK_GLOBAL":
                # Only accept module and name pushed as literals just before: a memo
                # lookup could smuggle in any string without a scan seeing it.
                if len(recent_strings) < 2:
                    raise UserError(ErrorCode.UNSAFE_PICKLE, f"{what} imports a global indirectly.")
                _check_global(".".join(recent_strings[-2:]), what=what)
            if name in _STRING_OPCODES:
                recent_strings.append(str(arg))
            elif name != "MEMOIZE":
                recent_strings.clear()
    except ValueError as exc:
        raise UserError(ErrorCode.UNSAFE_PICKLE, f"{what} is not a well-formed pickle.") from exc


def _check_global(qualified_name: str, *, what: str) -> None:
    if qualified_name not in _allowed_pickle_globals():
        raise UserError(
            ErrorCode.UNSAFE_PICKLE,
            f"{what} refers to {qualified_name!r}, which is not part of a plain tensor.",
        )


def _is_raw_storage(name: str) -> bool:
    """torch.save keeps tensor bytes in `<root>/data/<key>`: raw numbers, never unpickled."""
    parts = name.split("/")
    return len(parts) == 3 and parts[1] == "data" and parts[2].isdigit()


def load_torch_blob(blob: bytes, limits: ArchiveLimits, *, what: str) -> object:
    """Load a torch.save() zip held in memory, proving first that no code can run."""
    if not blob.startswith(b"PK\x03\x04"):
        raise UserError(ErrorCode.UNSAFE_PICKLE, f"{what} is not a torch.save zip archive.")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = check_zip(archive, limits, what=what)
            for member in members:
                if member.is_dir() or _is_raw_storage(member.filename):
                    continue
                is_pickle_name = member.filename.endswith(".pkl")
                with archive.open(member) as entry:
                    starts_like_pickle = entry.read(1) == b"\x80"
                if not (is_pickle_name or starts_like_pickle):
                    continue
                if member.file_size > limits.max_pickle_bytes:
                    raise UserError(ErrorCode.UNSAFE_PICKLE, f"{what} holds an oversized pickle.")
                scan_pickle(archive.read(member), what=f"{what} ({member.filename})")
    except zipfile.BadZipFile as exc:
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{what} is not a valid zip archive.") from exc
    # Storages must say "cpu": torch.export.load maps sample inputs saved on another device
    # with a weights_only=True load that fails on a host without it, and then retries with
    # weights_only=False (code execution). Refusing here keeps that retry unreachable.
    locations: set[str] = set()

    def on_cpu(storage: torch.types.Storage, location: str) -> torch.types.Storage:
        locations.add(str(location))
        return storage

    try:
        value = torch.load(io.BytesIO(blob), weights_only=True, map_location=on_cpu)
    except Exception as exc:  # torch raises many types here; all mean "not plain tensors"
        raise UserError(ErrorCode.UNSAFE_PICKLE, f"{what} does not load as plain tensors.") from exc
    if locations - {"cpu"}:
        raise UserError(
            ErrorCode.UNSAFE_LOCATION,
            f"{what} holds tensors saved on {sorted(locations - {'cpu'})[:3]}; "
            "export the model with its tensors on the CPU.",
        )
    return value


# --- torch.export archives -------------------------------------------------------------
#
# torch 2.13's torch.export.load runs untrusted code in three places we know of:
#  1. weights/constants whose config says use_pickle: torch.load(weights_only=False);
#  2. the sample inputs: after a failed weights_only=True load it retries without it;
#  3. model.json: every symbolic shape `expr_str` goes through sympy.sympify, i.e. eval.
# It also unpickles "opaque_obj_*" constants with pickle.loads, loads TorchBind objects
# ("custom_obj_*") and AOTInductor shared libraries. verify_pt2 therefore accepts only the
# exact records torch.export.save writes for a plain module, proves every pickle is plain
# tensors (so path 2 succeeds on its first, safe attempt), and whitelists the grammar of
# sympy expressions and the operators the graph calls.

_PT2_FIXED_RECORDS = frozenset(
    {
        "archive_format",
        "archive_version",
        "byteorder",
        ".data/version",
        ".data/serialization_id",
        "models/model.json",
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
        "data/sample_inputs/model.pt",
    }
)
_PT2_REQUIRED_RECORDS = _PT2_FIXED_RECORDS - {
    "byteorder",
    ".data/version",
    ".data/serialization_id",
}
_PT2 = "the .pt2 archive"


def verify_pt2(path: str, limits: ArchiveLimits) -> None:
    """Raise UserError unless torch.export.load(path) can only build tensors and a graph."""
    zip_sizes = _pt2_zip_sizes(path, limits)
    try:
        reader = torch._C.PyTorchFileReader(path)
        records = set(reader.get_all_records())
        # torch reads the archive with its own zip parser: insist both parsers agree on
        # every record and its size, so what we check here is what torch will load.
        reader_sizes = {name: reader.get_record_size(name) for name in records}
    except RuntimeError as exc:
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{_PT2} cannot be read by torch.") from exc
    if reader_sizes != zip_sizes:
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{_PT2} has an ambiguous zip directory.")

    missing = _PT2_REQUIRED_RECORDS - records
    if missing:
        raise UserError(
            ErrorCode.BAD_ARCHIVE,
            f"{_PT2} lacks {sorted(missing)}; re-save with torch.export.save.",
        )
    if reader.get_record("archive_format") != b"pt2":
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{_PT2} is not in the torch.export 'pt2' format.")

    payloads = _check_payload_config(reader, records, "weights", "weight_", limits)
    payloads |= _check_payload_config(reader, records, "constants", "tensor_", limits)
    unknown = records - _PT2_FIXED_RECORDS - payloads
    if unknown:
        raise UserError(
            ErrorCode.UNKNOWN_MEMBER,
            f"{_PT2} contains records torch.export.save does not write for a plain module: "
            f"{sorted(unknown)[:5]}.",
        )

    sample_inputs = load_torch_blob(
        reader.get_record("data/sample_inputs/model.pt"), limits, what="the sample inputs"
    )
    if not isinstance(sample_inputs, tuple | dict):
        raise UserError(
            ErrorCode.BAD_ARCHIVE, "The sample inputs of the .pt2 archive are malformed."
        )
    _check_model_json(reader.get_record("models/model.json"))


def _pt2_zip_sizes(path: str, limits: ArchiveLimits) -> dict[str, int]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = check_zip(archive, limits, what=_PT2)
    except zipfile.BadZipFile as exc:
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{_PT2} is not a valid zip archive.") from exc
    roots = {member.filename.split("/", 1)[0] for member in members}
    if len(roots) != 1 or any("/" not in member.filename for member in members):
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{_PT2} must hold its records under one folder.")
    return {
        member.filename.split("/", 1)[1]: member.file_size
        for member in members
        if not member.is_dir()
    }


def _check_payload_config(
    reader: torch._C.PyTorchFileReader,
    records: set[str],
    kind: str,
    prefix: str,
    limits: ArchiveLimits,
) -> set[str]:
    """Validate data/<kind>/model_<kind>_config.json; return the payload records it names."""
    config = _load_json(reader.get_record(f"data/{kind}/model_{kind}_config.json"), kind)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UserError(
            ErrorCode.BAD_ARCHIVE, f"The {kind} config of the .pt2 archive is malformed."
        )
    referenced: set[str] = set()
    for fqn, meta in entries.items():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or not path_name.startswith(prefix):
            # custom_obj_* (TorchBind) and opaque_obj_* (plain pickle.loads) land here.
            raise UserError(
                ErrorCode.UNSAFE_CONSTANT,
                f"{kind} entry {str(fqn)[:80]!r} is not a plain tensor; "
                "export a model whose state is tensors only.",
            )
        suffix = path_name[len(prefix) :]
        if not suffix.isdigit():
            raise UserError(
                ErrorCode.BAD_ARCHIVE, f"{kind} entry names an odd record {path_name!r}."
            )
        record = f"data/{kind}/{path_name}"
        if record not in records:
            raise UserError(ErrorCode.BAD_ARCHIVE, f"{kind} entry points to missing {path_name!r}.")
        if meta.get("use_pickle") is not False:
            blob = reader.get_record(record)
            value = load_torch_blob(blob, limits, what=f"{kind} entry {str(fqn)[:80]!r}")
            if type(value) not in (torch.Tensor, torch.nn.Parameter):
                raise UserError(
                    ErrorCode.UNSAFE_PICKLE, f"{kind} entry {str(fqn)[:80]!r} is not a tensor."
                )
        referenced.add(record)
    return referenced


def _load_json(data: bytes, what: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise UserError(
            ErrorCode.BAD_ARCHIVE, f"The {what} JSON of the .pt2 archive is malformed."
        ) from exc


_MAX_EXPR_CHARS = 4_000
_SYMPY_CALLS = frozenset(
    {
        # sympy core, as printed by srepr
        *("Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs"),
        *("floor", "ceiling", "Mod", "Eq", "Ne", "Equality", "Unequality", "And", "Or", "Not"),
        *("StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Piecewise"),
        # torch.utils._sympy.functions known to the deserializer
        *("FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt"),
        *("FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow"),
        *("FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat"),
        *("TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity"),
    }
)
_SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "True", "False", "pi", "E"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_sympy_expression(text: str) -> None:
    """Accept only sympy srepr-style expressions: allow-listed calls over literals.

    torch deserialises these with sympy.sympify, which evaluates Python code; an attribute
    access or a call to anything but a sympy constructor would run code at load time.
    """
    if len(text) > _MAX_EXPR_CHARS:
        raise UserError(
            ErrorCode.UNSAFE_EXPRESSION, "A symbolic shape in the .pt2 graph is too long."
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError) as exc:
        raise UserError(
            ErrorCode.UNSAFE_EXPRESSION, "A symbolic shape in the .pt2 graph is malformed."
        ) from exc
    for node in ast.walk(tree):
        if not _is_allowed_sympy_node(node):
            raise UserError(
                ErrorCode.UNSAFE_EXPRESSION,
                f"A symbolic shape in the .pt2 graph is not a plain expression: {text[:80]!r}.",
            )


def _is_allowed_sympy_node(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return _IDENTIFIER.fullmatch(value) is not None
        return isinstance(value, bool | int | float)
    return isinstance(
        node,
        ast.Expression
        | ast.keyword
        | ast.Load
        | ast.UnaryOp
        | ast.USub
        | ast.UAdd
        | ast.BinOp
        | ast.Add
        | ast.Sub
        | ast.Mult
        | ast.Div
        | ast.Pow,
    )


_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([a-z][a-z0-9_]*)\.([A-Za-z0-9_]+)")
# aten ops that touch files or print: never part of a classifier's forward pass.
_ATEN_DENIED = frozenset({"save", "from_file", "_print"})
_OTHER_TARGETS = frozenset(
    {
        *(f"_operator.{name}" for name in ("eq", "ne", "le", "ge", "lt", "gt", "neg", "pos")),
        *(f"_operator.{name}" for name in ("mul", "add", "sub", "floordiv", "mod", "pow")),
        *(f"_operator.{name}" for name in ("truediv", "and_", "or_", "lshift", "rshift")),
        "_operator.getitem",
        "math.trunc",
        *(f"torch.sym_{name}" for name in ("not", "int", "float", "ite", "max", "min", "sqrt")),
        "torch._sym_sqrt",
        *(
            f"torch.ops.higher_order.{name}"
            for name in ("cond", "while_loop", "map_impl", "scan", "wrap_with_set_grad_enabled")
        ),
        "torch.ops.higher_order.wrap_with_autocast",
        # Metadata and shape assertions export inserts (a dtype cast of an integer mask).
        *(
            f"torch.ops.aten.{name}.default"
            for name in ("_assert_tensor_metadata", "_assert_scalar", "_assert_async")
        ),
    }
)


def check_graph_target(target: str) -> None:
    """Accept ATen operators and the symbolic-shape helpers export emits; nothing else."""
    match = _ATEN_TARGET.fullmatch(target)
    if match and match.group(1) not in _ATEN_DENIED:
        return
    if target in _OTHER_TARGETS:
        return
    raise UserError(
        ErrorCode.UNSUPPORTED_OPERATOR,
        f"The .pt2 graph calls {target[:80]!r}, which is not an allowed ATen operator.",
    )


def _check_model_json(data: bytes) -> None:
    model = _load_json(data, "model")
    pending: list[object] = [model]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str" and isinstance(value, str):
                    check_sympy_expression(value)
                elif key in ("target", "as_operator") and isinstance(value, str):
                    # "target" only names operators in the torch.export schema (Node).
                    check_graph_target(value)
                else:
                    pending.append(value)
