"""Entry point of the sandboxed child process (see ``worker/sandbox.py`` for the protocol).

The child reads one ``ChildRequest`` (``core/contracts.py``) on stdin and writes events as
JSON lines on the stdout it was started with. That channel is kept for events alone: file
descriptor 1 is pointed at stderr first, so whatever a library prints cannot corrupt it.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ValidationError

from core.contracts import (
    CHILD_REQUEST,
    AnyEvent,
    AnyRequest,
    DatasetInfo,
    DistillRequest,
    ErrorEvent,
    InspectDatasetRequest,
    InspectTeacherRequest,
    TeacherInfo,
)
from core.errors import ErrorCode, is_disk_full
from engine.errors import UserError


class Channel:
    """The event channel: one JSON line per event, flushed at once."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def emit(self, event: BaseModel) -> None:
        self.stream.write(event.model_dump_json() + "\n")
        self.stream.flush()


# What onnxruntime and torch say when an allocation fails under the memory limit.
_ALLOCATION_FAILED = ("failed to allocate", "bad_alloc", "can't allocate memory", "out of memory")


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(20):  # a chain of causes, never a cycle
        if seen is None:
            break
        if isinstance(seen, MemoryError):
            return True
        if any(text in str(seen).lower() for text in _ALLOCATION_FAILED):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _torch_threads() -> None:
    """torch's threads, the sandbox's share; only where torch is needed (a dataset's
    validation never imports it: engine/lazy.py)."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("STILLHOUSE_CHILD_THREADS", "1"))))


def _handle(request: AnyRequest, channel: Channel, preloaded: bool) -> AnyEvent:
    if not isinstance(request, InspectDatasetRequest):
        _torch_threads()
    if isinstance(request, DistillRequest):
        from engine.job import run_from_request

        return run_from_request(request, emit=channel.emit, preloaded=preloaded)
    try:
        return _inspect(request)
    except Exception as exc:
        if not _out_of_memory(exc):
            raise
        raise UserError(
            ErrorCode.TOO_LARGE,
            "Validating this file needs more memory than an upload may use "
            "(STILLHOUSE_VALIDATION_MEMORY_BYTES).",
        ) from exc


def _inspect(request: InspectTeacherRequest | InspectDatasetRequest) -> AnyEvent:
    """An upload's validation: the guarded loader, and a teacher's dry run."""
    if isinstance(request, InspectTeacherRequest):
        from engine.teachers import inspect_teacher

        info = inspect_teacher(
            request.path,
            request.format,
            allow_torchscript=request.allow_torchscript,
            output_name=request.output_name,
            output_kind=request.output_kind,
            limits=request.limits,
        )
        if request.tokenizer_path is not None:
            from engine.tokenizer import inspect_tokenizer

            if info.get("input_kind") != "tokens":
                raise UserError(
                    ErrorCode.BAD_TOKENIZER,
                    "A tokenizer goes with a teacher that takes token inputs (input_ids); "
                    "this one takes a float tensor.",
                )
            info["tokenizer"] = inspect_tokenizer(request.tokenizer_path, info.get("vocab_size"))
            info.pop("tokenizer_json", None)  # the uploaded tokenizer wins over a folder's
        return TeacherInfo.model_validate(info)
    from engine.data import DataLimits, inspect_dataset

    limits = DataLimits.of(request.limits)
    return DatasetInfo.model_validate(inspect_dataset(request.path, request.format, limits=limits))


def _preload(kind: str) -> None:
    """While waiting for a request: import what it will import. ``job``: what a job imports,
    and each export path run once on a tiny model of our own (the first ``torch.export``/ONNX
    export of a process pays for imports and lazy set-up); ``dataset``: the datasets' guarded
    loaders (numpy); ``teacher``: the teachers' (torch, torch.export's archive reader, onnx,
    onnxruntime). Nothing here can fail the request that comes next."""
    try:
        if kind == "dataset":
            import engine.data  # noqa: F401 - imported for its side effects

            return
        if kind == "teacher":
            _torch_threads()
            import onnx  # noqa: F401 - imported for its side effects
            import onnxruntime  # noqa: F401
            import torch.export._trace  # noqa: F401 - what a .pt2's symbolic shapes import
            import torch.export.pt2_archive._package  # noqa: F401

            import engine.teachers  # noqa: F401

            return
        import tempfile

        import torch

        _torch_threads()

        import engine.engine  # noqa: F401 - imported for its side effects
        from engine.export import warm_up

        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
            warm_up(tmp)
    except Exception:
        traceback.print_exc()


def _private_channel() -> Channel:
    """Keep the inherited stdout for events; fd 1 (and ``sys.stdout``) go to stderr."""
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return Channel(events)


def error_event(exc: BaseException) -> ErrorEvent:
    """The ``error`` line for an exception that ended the request."""
    if isinstance(exc, UserError):
        return ErrorEvent(code=exc.code, message=exc.message)
    if isinstance(exc, MemoryError):
        code, message = ErrorCode.OUT_OF_MEMORY, "the worker ran out of memory"
    elif is_disk_full(exc):
        code, message = ErrorCode.STORAGE_FULL, f"the worker's disk is full: {exc}"
    else:
        code, message = ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"
    return ErrorEvent(code=code, message=message)


def _run(channel: Channel, preloaded: bool) -> int:
    try:
        request = CHILD_REQUEST.validate_json(sys.stdin.read())
    except ValidationError as exc:
        channel.emit(ErrorEvent(code=ErrorCode.BAD_REQUEST, message=f"not a request: {exc}"))
        return 1
    try:
        channel.emit(_handle(request, channel, preloaded))
        return 0
    except UserError as exc:
        channel.emit(error_event(exc))
        return 0
    except Exception as exc:  # MemoryError too: the error line says what happened
        if not isinstance(exc, MemoryError) and not is_disk_full(exc):
            traceback.print_exc()
        channel.emit(error_event(exc))
        return 1


def main() -> int:
    Path(".ready").touch()  # it runs: the sandbox's mounts are made (worker/sandbox.py, adopt)
    channel = _private_channel()
    preload = os.environ.get("STILLHOUSE_CHILD_PRELOAD", "")
    if preload:
        _preload(preload)
    return _run(channel, preloaded=preload == "job")


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every event is written and flushed, every file the request made is closed: skip the
    # interpreter's teardown, which takes seconds once torch and its compilers are imported
    # (and the worker waits for this process to end).
    os._exit(code)
