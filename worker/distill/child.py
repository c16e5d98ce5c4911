"""Entry point of the sandboxed child process (see ``worker/sandbox.py`` for the protocol)."""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from typing import Any

from core.errors import ErrorCode, is_disk_full
from worker.distill.errors import UserError


def _emit(event: dict[str, Any]) -> None:
    if event.get("event") in ("result", "error"):  # the last word: with this process's peak
        event["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


# What onnxruntime and torch say when an allocation fails under the address-space limit.
_ALLOCATION_FAILED = ("failed to allocate", "bad_alloc", "can't allocate memory", "out of memory")


def _out_of_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        if any(text in str(seen).lower() for text in _ALLOCATION_FAILED):
            return True
        seen = seen.__cause__
    return False


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if isinstance(request.get("caps"), dict):
        from worker.distill.guard import Caps, use_caps

        use_caps(Caps(**request["caps"]))
    if op in ("inspect_teacher", "inspect_dataset"):
        try:
            return _inspect(request)
        except (UserError, MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise UserError(
                ErrorCode.TOO_LARGE,
                "Validating this file needs more memory than an upload may use "
                "(STILLHOUSE_VALIDATION_MEMORY_BYTES).",
            ) from exc
    if op == "distill":
        from worker.distill.job import run_from_request

        return run_from_request(request, emit=_emit)
    raise UserError(ErrorCode.BAD_REQUEST, f"unknown operation {op!r}")


def _inspect(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "inspect_teacher":
        from worker.distill.teachers import inspect_teacher

        return inspect_teacher(
            request["path"],
            request["format"],
            allow_torchscript=bool(request.get("allow_torchscript")),
            output_name=request.get("output_name"),
            output_kind=request.get("output_kind") or "auto",
        )
    from worker.distill.data import inspect_dataset

    return inspect_dataset(request["path"], request["format"])


def _preload() -> None:
    """While waiting for a request: import what a job imports and run each export path once
    on a tiny model of our own (the first ``torch.export``/ONNX export of a process pays for
    imports and lazy set-up). Nothing here can fail the job that comes next."""
    try:
        import tempfile

        import torch

        import worker.distill.engine  # noqa: F401 - imported for its side effects
        from worker.distill.export import warm_up

        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
            warm_up(tmp)
    except Exception:
        traceback.print_exc()


def error_event(exc: BaseException) -> dict[str, Any]:
    """The ``error`` line for an exception that ended the request."""
    if isinstance(exc, UserError):
        return {"event": "error", "code": exc.code, "message": exc.message}
    if isinstance(exc, MemoryError):
        code, message = ErrorCode.OUT_OF_MEMORY, "the worker ran out of memory"
    elif is_disk_full(exc):
        code, message = ErrorCode.STORAGE_FULL, f"the worker's disk is full: {exc}"
    else:
        code, message = ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"
    return {"event": "error", "code": code, "message": message}


def main() -> int:
    _emit({"event": "ready"})  # the sandbox is set up (worker/sandbox.py, Child.adopt)
    threads = int(os.environ.get("STILLHOUSE_CHILD_THREADS", "1"))
    try:
        import torch

        torch.set_num_threads(max(1, threads))
    except ImportError:
        pass
    preloaded = os.environ.get("STILLHOUSE_CHILD_PRELOAD") == "1"
    if preloaded:
        _preload()
    try:
        request = json.loads(sys.stdin.read())
        if preloaded:
            request["preloaded"] = True
        result = _handle(request)
        _emit({"event": "result", **result})
        return 0
    except UserError as exc:
        _emit(error_event(exc))
        return 0
    except Exception as exc:  # MemoryError too: the error line says what happened
        if not isinstance(exc, MemoryError) and not is_disk_full(exc):
            traceback.print_exc()
        _emit(error_event(exc))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
