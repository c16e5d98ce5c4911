"""One job, end to end: claim → run the engine in the sandbox → relay progress → publish
the student and the report. The job row is the truth; every write is fenced by attempt."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from core.db import session_scope
from core.errors import ErrorCode, is_disk_full
from core.logs import log_context, set_log_context
from core.settings import Settings, get_settings
from core.storage import get_storage
from models import StoredFile, new_id, utcnow
from models.job_repository import JobRepository
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository
from models.tables import JobDataset, JobTeacher
from worker.metrics import observe_stages
from worker.sandbox import (
    EXIT_GRACE_S,
    Child,
    SandboxError,
    job_memory_bytes,
    job_threads,
    prepare_jobdir,
    upload_caps,
)

log = logging.getLogger(__name__)

EXTENSIONS = {"torch_export": "pt2", "onnx": "onnx", "safetensors": "safetensors"}
PROGRESS_EVERY_S = 0.5
# The names worker/distill/soft_labels.py gives its files (not imported: it imports torch).
SOFT_LABELS = "soft-labels-*.safetensors"
# Within this of a cancel request the job's stop file exists (a query on the job's row).
CANCEL_POLL_S = 0.5


class ChildLost(OSError):
    """The sandboxed child ended without a result: retried like any transient fault."""


class HandedBack(OSError):
    """The worker is stopping: the job checkpointed and goes to the next worker (a retry)."""


# --- stopping: SIGTERM of a worker hands its job back ----------------------------------------
# Celery's warm shutdown would wait for the job to end. Its main process marks the stop with
# a file named after itself; the pool process running the job sees it on its next tick.
_main_pid = os.getpid()


def _drain_flag(settings: Settings, main_pid: int) -> Path:
    return (settings.data_dir / "work").resolve() / f".stopping-{socket.gethostname()}-{main_pid}"


def worker_stopping() -> None:
    """In the worker's main process, when it begins to stop."""
    flag = _drain_flag(get_settings(), os.getpid())
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()


def worker_starting() -> None:
    """In the worker's main process, at start: a flag left by a process of the same id."""
    _drain_flag(get_settings(), os.getpid()).unlink(missing_ok=True)


def pool_process_started() -> None:
    """In a pool process: its main process is its parent."""
    global _main_pid
    _main_pid = os.getppid()


def _stopping(settings: Settings) -> bool:
    return _drain_flag(settings, _main_pid).exists()


# Faults worth a retry: the database, the broker or storage going away for a while, and a
# sandboxed child that was lost.
TRANSIENT = (OperationalError, OSError)


@dataclass
class Claimed:
    job_id: str
    attempt: int
    tenant_id: str
    request: dict[str, Any]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.lease_seconds)


def job_workdir(settings: Settings, job_id: str) -> Path:
    return (settings.data_dir / "work" / job_id).resolve()


def claim(job_id: str, settings: Settings) -> Claimed | None:
    storage = get_storage()
    with session_scope() as session:
        jobs = JobRepository(session)
        attempt = jobs.claim(
            job_id, worker=worker_name(), lease=_lease(settings), max_attempts=settings.max_attempts
        )
        if attempt is None:
            return None
        job = jobs.get(job_id)
        assert job is not None
        files = StoredFileRepository(session)

        def source(row: Any) -> dict[str, Any]:
            stored = files.get(row.file_id)
            assert stored is not None
            return {
                "path": str(storage.local_path(stored.key, stored.sha256)),
                "format": row.format,
                "sha256": row.sha256,
            }

        def teacher_source(row: Any) -> dict[str, Any]:
            # The output and kind the validation dry run settled on: the job uses the same.
            return {**source(row), "output_name": row.output_name, "output_kind": row.output_kind}

        links = session.query(JobTeacher).filter_by(job_id=job_id).order_by(JobTeacher.position)
        teachers = TeacherRepository(session)
        teacher_sources = [teacher_source(teachers.get(link.teacher_id)) for link in links]
        roles = {d.role: d.dataset_id for d in session.query(JobDataset).filter_by(job_id=job_id)}
        datasets = DatasetRepository(session)
        workdir = job_workdir(settings, job_id)
        transfer = source(datasets.get(roles["transfer"]))
        request = {
            "op": "distill",
            "teachers": teacher_sources,
            "transfer": transfer,
            "eval": source(datasets.get(roles["eval"])) if "eval" in roles else None,
            "spec": job.spec,
            "workdir": str(workdir / "engine"),
            "cache_dir": str(_soft_label_scope(settings, teacher_sources, transfer)),
            "stop_file": str(workdir / "STOP"),
            "checkpoint_every": settings.checkpoint_every_steps,
            "allow_torchscript": settings.allow_torchscript,
            "caps": upload_caps(settings),
        }
        return Claimed(job_id, attempt, job.tenant_id, request)


def _soft_label_scope(
    settings: Settings, teachers: list[dict[str, Any]], transfer: dict[str, Any]
) -> Path:
    """The soft-label cache folder of exactly these teachers on exactly this dataset (by
    content): all a job's sandbox may read or add to, never another set's labels."""
    content = json.dumps([[t["sha256"] for t in teachers], transfer["sha256"]])
    return settings.storage_dir / "softlabels" / hashlib.sha256(content.encode()).hexdigest()


# The spare sandbox child of this worker process (worker/sandbox.py): at most one.
_spare: Child | None = None


def _child_limits(settings: Settings) -> tuple[int, int, int]:
    return job_threads(settings), settings.sandbox_cpu_seconds, job_memory_bytes(settings)


def _drop(child: Child) -> None:
    child.close()
    shutil.rmtree(child.workdir, ignore_errors=True)


def start_spare(settings: Settings | None = None) -> None:
    """Start this process's spare child unless it has a live one (or spares are off).

    Never raises: a spare only saves time, so failing to start one is logged, not fatal (it
    runs after a job and at pool start, where an exception would replace the real outcome).
    """
    global _spare
    try:
        settings = settings or get_settings()
        if not settings.spare_child or (_spare is not None and _spare.alive()):
            return
        if _stopping(settings):  # the worker is stopping: no job will come
            return
        if _spare is not None:  # died while waiting
            _drop(_spare)
            _spare = None
        work = (settings.data_dir / "work").resolve()
        host = socket.gethostname()
        # Left by spares of this host's processes that are gone (the folder may be shared by
        # several hosts or containers, whose process ids mean nothing here).
        for old in work.glob(f".spare-{host}-*"):
            pid = old.name[len(f".spare-{host}-") :].split("-")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        threads, cpu_seconds, memory_bytes = _child_limits(settings)
        _spare = Child(
            None,
            workdir=work / f".spare-{host}-{os.getpid()}-{secrets.token_hex(4)}",
            threads=threads,
            memory_bytes=memory_bytes,
            cpu_seconds=cpu_seconds,
            preload=True,
            settings=settings,
        )
    except Exception:
        log.exception("could not start a spare sandbox child; jobs start cold")


def _take_spare(settings: Settings) -> Child | None:
    """The spare, when it is alive and has these limits; else None (and it is dropped)."""
    global _spare
    child, _spare = _spare, None
    if child is None:
        return None
    if child.alive() and (child.threads, child.cpu_seconds, child.memory_bytes) == _child_limits(
        settings
    ):
        return child
    _drop(child)
    return None


def _cold_child(settings: Settings, jobdir: Path) -> Child:
    threads, cpu_seconds, memory_bytes = _child_limits(settings)
    return Child(
        None,
        workdir=jobdir,
        threads=threads,
        memory_bytes=memory_bytes,
        cpu_seconds=cpu_seconds,
        settings=settings,
    )


def start_child(settings: Settings, jobdir: Path, request: dict[str, Any]) -> Child:
    """A child working on ``request`` in ``jobdir``: the spare when it can take it, else a
    new one. The request's files are staged into the sandbox and its paths translated."""
    child = _take_spare(settings)
    if child is not None:
        try:
            child.adopt(jobdir)
            child.send(sandbox_request(child, jobdir, request))
            return child
        except BrokenPipeError:  # it died just now: start cold instead
            child.close()
    child = _cold_child(settings, jobdir)
    child.send(sandbox_request(child, jobdir, request))
    return child


def sandbox_request(child: Child, jobdir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with the child's names for its paths: inputs hard-linked in, the job's
    engine folder, stop file and the soft labels of these inputs (copied in by links)."""

    def staged(name: str, item: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if item is None else {**item, "path": child.stage(name, Path(item["path"]))}

    out = dict(request)
    out["teachers"] = [staged(f"teacher-{i}", t) for i, t in enumerate(request["teachers"])]
    out["transfer"] = staged("transfer", request["transfer"])
    out["eval"] = staged("eval", request.get("eval"))
    out["workdir"] = child.inside(jobdir / "engine")
    out["stop_file"] = child.inside(jobdir / "STOP")
    if child.sandboxed:
        cache = link_soft_labels(Path(request["cache_dir"]), jobdir / "cache")
        out["cache_dir"] = child.inside(cache)
    return out


def link_soft_labels(scope: Path, cache: Path) -> Path:
    """Fill the job's ``cache`` folder with links to the stored labels of its scope."""
    prepare_jobdir(cache)
    for path in scope.glob(SOFT_LABELS):
        target = cache / path.name
        if not target.exists():
            with contextlib.suppress(OSError):  # another filesystem: computed again
                os.link(path, target)
    return cache


def keep_soft_labels(cache: Path, scope: Path) -> None:
    """After the child is gone: labels it computed join its scope of the shared cache."""
    if not cache.is_dir():
        return
    for path in cache.glob(SOFT_LABELS):
        target = scope / path.name
        if path.is_file() and not path.is_symlink() and not target.exists():
            scope.mkdir(parents=True, exist_ok=True)
            tmp = scope / f".{path.name}.{secrets.token_hex(4)}.tmp"
            os.link(path, tmp)
            os.replace(tmp, target)


class Run:
    """Drive one claimed job's child process until it ends or we lose the lease."""

    def __init__(self, claimed: Claimed, settings: Settings) -> None:
        self.c = claimed
        self.settings = settings
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.last_write = 0.0
        self.last_beat = time.monotonic()
        self.last_cancel_poll = 0.0
        self.cancelled = self.handing_back = False
        self.pending: dict[str, Any] | None = None
        self.written_key: tuple[Any, ...] = ()
        self.finished = False

    def _read(self, child: Child) -> None:
        for event in child.lines():
            self.events.put(event)
        self.events.put(None)

    def execute(self) -> None:
        jobdir = Path(self.c.request["workdir"]).parent
        jobdir.mkdir(parents=True, exist_ok=True)
        (jobdir / "STOP").unlink(missing_ok=True)
        try:
            child = start_child(self.settings, jobdir, self.c.request)
        except SandboxError as exc:
            self._fail(exc.code, exc.message)
            return
        reader = threading.Thread(target=self._read, args=(child,), daemon=True)
        reader.start()
        try:
            self._loop(child, jobdir)
        finally:
            child.kill(EXIT_GRACE_S)
            reader.join(timeout=5)  # it ends at the killed child's end of output
            child.close()  # its folder is the job's: checkpoints stay for the next attempt
            if child.workdir != jobdir:  # a spare not adopted (no sandbox): its own folder
                shutil.rmtree(child.workdir, ignore_errors=True)
            if child.sandboxed:
                keep_soft_labels(jobdir / "cache", Path(self.c.request["cache_dir"]))
        if self.finished:
            shutil.rmtree(jobdir, ignore_errors=True)

    def _loop(self, child: Child, workdir: Path) -> None:
        while True:
            try:
                event = self.events.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                event = {"event": "tick"}
            if not self._tick(workdir):
                log.warning(
                    "job %s: lease lost; stopping attempt %s", self.c.job_id, self.c.attempt
                )
                return
            if event is None:
                self._lost(child)
                return
            kind = event.get("event")
            if kind == "progress":
                self.pending = event
                self._flush_progress()
            elif kind == "result":
                self._flush_progress(force=True)
                self._publish(event, child)
                return
            elif kind == "error":
                code, message = str(event.get("code")), str(event.get("message"))
                if code == ErrorCode.CANCELLED and self.handing_back:
                    raise HandedBack("the worker is stopping; the job goes to the next one")
                if code == ErrorCode.CANCELLED:
                    with session_scope() as session:
                        JobRepository(session).cancel_running(self.c.job_id, self.c.attempt)
                else:
                    self._fail(code, message)
                return

    def _tick(self, workdir: Path) -> bool:
        """Cancel and worker-stop check (every CANCEL_POLL_S: the training loop sees the
        stop file within 0.2 s more) and heartbeat. False when the lease was taken over."""
        now = time.monotonic()
        if now - self.last_cancel_poll >= CANCEL_POLL_S:
            self.last_cancel_poll = now
            with session_scope() as session:
                self.cancelled = JobRepository(session).cancel_requested(self.c.job_id)
            self.handing_back = not self.cancelled and _stopping(self.settings)
            if self.cancelled or self.handing_back:
                (workdir / "STOP").touch()
        if now - self.last_beat < self.settings.heartbeat_seconds:
            return True
        self.last_beat = now
        with session_scope() as session:
            return JobRepository(session).heartbeat(
                self.c.job_id, self.c.attempt, _lease(self.settings)
            )

    def _lost(self, child: Child) -> None:
        """The child died without an answer (killed, out of memory): like a lost worker, the
        job goes back to the queue and the next attempt resumes from its checkpoint; on the
        last attempt it fails with the reason."""
        message = child.crash_message()
        if self.c.attempt >= self.settings.max_attempts:
            self._fail(ErrorCode.WORKER_CRASHED, f"{message} (attempt {self.c.attempt}, the last)")
            return
        log.warning("job %s: the sandbox child was lost: %s", self.c.job_id, message)
        raise ChildLost(message)

    def _flush_progress(self, force: bool = False) -> None:
        event = self.pending
        if event is None:
            return
        key = (event.get("stage"), event.get("epoch"))
        now = time.monotonic()
        if not force and key == self.written_key and now - self.last_write < PROGRESS_EVERY_S:
            return
        values: dict[str, Any] = {
            "stage": event.get("stage"),
            "progress": float(event.get("progress") or 0.0),
            "epoch": int(event.get("epoch") or 0),
        }
        if event.get("metrics"):
            values["metrics"] = event["metrics"]
        with session_scope() as session:
            JobRepository(session).progress(self.c.job_id, self.c.attempt, **values)
        self.pending, self.written_key, self.last_write = None, key, now

    def _fail(self, code: str, message: str) -> None:
        with session_scope() as session:
            JobRepository(session).fail(self.c.job_id, self.c.attempt, code=code, message=message)

    def _publish(self, result: dict[str, Any], child: Child) -> None:
        """Store the students under keys derived from the job, then finish in one transaction."""
        storage = get_storage()
        artifacts: dict[str, Any] = {}
        rows = []
        for fmt, path in result["files"].items():
            key = f"students/{self.c.job_id}/attempt-{self.c.attempt}/student.{EXTENSIONS[fmt]}"
            put = storage.put_file(key, child.outside(str(path)))
            file_id = new_id("file")
            filename = f"student-{self.c.job_id}.{EXTENSIONS[fmt]}"
            rows.append(
                StoredFile(
                    id=file_id,
                    tenant_id=self.c.tenant_id,
                    key=key,
                    kind="student",
                    filename=filename,
                    size_bytes=put.size_bytes,
                    sha256=put.sha256,
                    created_at=utcnow(),
                )
            )
            artifacts[fmt] = {
                "file_id": file_id,
                "key": key,
                "sha256": put.sha256,
                "size_bytes": put.size_bytes,
                "filename": filename,
            }
        report = dict(result["report"])
        report.setdefault("student_files", {f: a["sha256"] for f, a in artifacts.items()})
        with session_scope() as session:
            finished = JobRepository(session).finish(
                self.c.job_id,
                self.c.attempt,
                report=report,
                artifacts=artifacts,
                metrics=result.get("metrics") or {},
            )
            if finished:
                for row in rows:
                    StoredFileRepository(session).add(row)
        if not finished:
            for art in artifacts.values():
                storage.delete(art["key"])
            return
        observe_stages(report)
        self.finished = True


def run_job(job_id: str) -> None:
    with log_context(job_id=job_id, tenant_id=None):
        _run_job(job_id)


def _run_job(job_id: str) -> None:
    settings = get_settings()
    claimed = claim(job_id, settings)
    if claimed is None:
        log.info("job %s: not claimable (taken, finished, cancelled or out of attempts)", job_id)
        return
    set_log_context(tenant_id=claimed.tenant_id)
    log.info("job %s: attempt %s on %s", job_id, claimed.attempt, worker_name())
    try:
        try:
            Run(claimed, settings).execute()
        finally:
            start_spare(settings)  # for the next job, while this worker waits for it
    except SoftTimeLimitExceeded:
        with session_scope() as session:
            JobRepository(session).fail(
                job_id,
                claimed.attempt,
                code=ErrorCode.TIME_LIMIT,
                message=f"the job ran past the limit of {settings.job_soft_time_limit_s} s",
            )
    except OSError as exc:
        if not is_disk_full(exc):
            _give_back(job_id, claimed.attempt)
            raise
        with session_scope() as session:
            JobRepository(session).fail(
                job_id, claimed.attempt, code=ErrorCode.STORAGE_FULL, message=str(exc)
            )
    except TRANSIENT:
        _give_back(job_id, claimed.attempt)
        raise


def _give_back(job_id: str, attempt: int) -> None:
    """Give the job back at once so that the retry (with backoff) can claim it again; if the
    database itself is down, the lease runs out and the sweep re-publishes it."""
    with contextlib.suppress(*TRANSIENT), session_scope() as session:
        JobRepository(session).release(job_id, attempt)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_orphans(publish: Any) -> int:
    """At worker start: jobs of this host whose worker process is gone (a restart after a
    crash or a stop) need not wait for their lease to run out. Returns how many."""
    ids = []
    with session_scope() as session:
        jobs = JobRepository(session)
        for job in jobs.running_on(f"{socket.gethostname()}:"):
            pid = (job.worker or "").rsplit(":", 1)[-1]
            if (
                pid.isdigit()
                and not _pid_alive(int(pid))
                and jobs.expire_lease(job.id, job.attempt)
            ):
                ids.append(job.id)
    for job_id in ids:
        publish(job_id)
    return len(ids)


def requeue_stale(publish: Any) -> int:
    """Re-publish jobs whose lease expired; fail those out of attempts. Returns how many."""
    settings = get_settings()
    now = utcnow()
    count = 0
    with session_scope() as session:
        jobs = JobRepository(session)
        stale = jobs.stale(now)
        ended = []
        for job in stale:
            if job.cancel_requested:
                jobs.cancel_running(job.id, job.attempt)
                ended.append(job.id)
            elif job.attempt >= settings.max_attempts:
                jobs.fail_exhausted(job, settings.max_attempts)
                ended.append(job.id)
            else:
                count += 1
        ids = [j.id for j in stale if not j.cancel_requested and j.attempt < settings.max_attempts]
        # A message can be lost between its delivery and the claim (a worker killed then):
        # re-publish long-queued jobs, rarely, since a busy GPU also keeps jobs queued.
        lost = jobs.queued_older_than(now - timedelta(seconds=10 * settings.lease_seconds))
        for job in lost:
            jobs.touch(job.id)
        ids += [j.id for j in lost]
    for job_id in ids:
        publish(job_id)
    if ids or ended:
        log.info("sweep: re-queued %s, ended %s (%s)", len(ids), len(ended), ", ".join(ids + ended))
    return len(ids)
