"""The ``distill`` operation of the sandboxed child: one job's engine run, progress as JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import ErrorCode
from core.spec import JobSpec
from worker.distill.errors import Cancelled, UserError


def _source(item: dict[str, Any]) -> Any:
    from worker.distill.engine import Source

    return Source(
        path=Path(item["path"]),
        format=item["format"],
        sha256=item["sha256"],
        output_name=item.get("output_name"),
        output_kind=item.get("output_kind"),
    )


def run_from_request(
    request: dict[str, Any], *, emit: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    from worker.distill.engine import run_distillation

    stop_file = Path(request["stop_file"])
    try:
        result = run_distillation(
            [_source(t) for t in request["teachers"]],
            _source(request["transfer"]),
            _source(request["eval"]) if request.get("eval") else None,
            JobSpec.model_validate(request["spec"]),
            workdir=Path(request["workdir"]),
            cache_dir=Path(request["cache_dir"]),
            on_progress=lambda event: emit({"event": "progress", **event}),
            should_stop=stop_file.exists,
            device=request.get("device"),
            checkpoint_every=int(request.get("checkpoint_every", 1000)),
            allow_torchscript=bool(request.get("allow_torchscript", False)),
        )
    except Cancelled as exc:
        raise UserError(ErrorCode.CANCELLED, "the job was cancelled") from exc
    # Whether this ran in a spare child started ahead of the job (imports already done).
    report = {**result.report, "sandbox": {"preloaded": bool(request.get("preloaded"))}}
    return {
        "files": {fmt: str(path) for fmt, path in result.files.items()},
        "report": report,
        "metrics": result.metrics,
    }
