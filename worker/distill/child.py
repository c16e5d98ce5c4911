"""Entry point of the sandboxed child process (see ``worker/sandbox.py`` for the protocol)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from core.errors import ErrorCode, is_disk_full
from worker.distill.errors import UserError


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def _handle(request: dict[str, Any]) -> dict[str, Any]:
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
    if op == "inspect_dataset":
        from worker.distill.data import inspect_dataset

        return inspect_dataset(request["path"], request["format"])
    if op == "distill":
        from worker.distill.job import run_from_request

        return run_from_request(request, emit=_emit)
    raise UserError(ErrorCode.BAD_REQUEST, f"unknown operation {op!r}")


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
