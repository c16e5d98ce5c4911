"""One job, end to end: claim → run the engine in the sandbox → relay progress → publish
the student and the report. The job row is the truth; every write is fenced by attempt."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.artifacts import Artifact, Artifacts
from core.atomic import atomic_write
from core.contracts import (
    AnyEvent,
    CheckpointEvent,
    DistillRequest,
    EpochEvent,
    ErrorEvent,
    FileRef,
    Outcome,
    ProgressEvent,
    ResumedEvent,
    SoftLabelsEvent,
    StoppedEvent,
    StopReason,
)
from core.db import session_scope
from core.enums import EXTENSIONS, JobEventKind
from core.errors import ErrorCode, is_disk_full
from core.logs import log_context, set_log_context
from core.settings import Settings, get_settings
from core.spec import JobSpec
from core.storage import get_storage
from models import Dataset, Job, StoredFile, Teacher, new_id, utcnow
from models.history_repository import HistoryRepository
from models.job_repository import JobRepository
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository
from worker.bwrap import job_memory_bytes
from worker.checkpoint_sync import CheckpointMirror, SoftLabelMirror
from worker.metrics import observe_stages
from worker.sandbox import Child, SandboxError, job_threads
from worker.shutdown import pid_alive, stopping

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
# How often a running job's worker asks whether it was cancelled (one query on the job's row)
# or is stopping; the training loop sees the stop file within trainer.STOP_CHECK_EVERY_S more.
STOP_POLL_S = 0.5


class RetryLater(Exception):
    """Raised to have the task run again later (with backoff): the job is not done, and
    nothing about it is wrong."""


class ChildLost(RetryLater):
    """The sandboxed child ended without an answer: retried like a lost worker."""


class HandedBack(RetryLater):
    """This worker is stopping: the job checkpointed and went back to the queue."""


class PastTimeLimit(Exception):
    """The attempt ran past ``job_soft_time_limit_s``: the job fails with ``time_limit``.

    The run checks its own deadline at every poll. Celery's soft limit, a signal that raises
    wherever the pool process happens to be (and is swallowed by a step that tolerates
    failures), comes ``core.queue.SOFT_LIMIT_MARGIN_S`` later, as the backstop only."""


# Faults worth a retry: the database, the broker or storage going away for a while, and the
# explicit ``RetryLater`` of a job that went back to the queue.
TRANSIENT = (OperationalError, OSError, RetryLater)


@dataclass
class Claimed:
    job_id: str
    attempt: int
    tenant_id: str
    request: DistillRequest


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _lease(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.lease_seconds)


def job_workdir(settings: Settings, job_id: str) -> Path:
    return (settings.data_dir / "work" / job_id).resolve()


def _file_ref(session: Session, row: Teacher | Dataset | None) -> FileRef:
    assert row is not None
    stored = StoredFileRepository(session).get(row.file_id)
    assert stored is not None
    return FileRef(
        path=str(get_storage().local_path(stored.key, stored.sha256)),
        format=row.format,
        sha256=row.sha256,
    )


def _teacher_ref(session: Session, row: Teacher | None) -> FileRef:
    """A teacher's file with the output and kind its validation dry run settled on."""
    assert row is not None
    ref = _file_ref(session, row)
    return ref.model_copy(update={"output_name": row.output_name, "output_kind": row.output_kind})


def _tokenizer_ref(session: Session, row: Teacher | None) -> FileRef | None:
    """The first teacher's tokenizer.json, which tokenizes the job's text datasets."""
    if row is None or row.tokenizer_file_id is None:
        return None
    stored = StoredFileRepository(session).get(row.tokenizer_file_id)
    if stored is None:
        return None
    path = str(get_storage().local_path(stored.key, stored.sha256))
    return FileRef(path=path, format="tokenizer", sha256=stored.sha256)


def _request(session: Session, job: Job, settings: Settings) -> DistillRequest:
    jobs, teachers, datasets = (
        JobRepository(session),
        TeacherRepository(session),
        DatasetRepository(session),
    )
    roles = jobs.dataset_roles(job.id)
    workdir = job_workdir(settings, job.id)
    teacher_ids = jobs.teacher_ids(job.id)
    teacher_refs = [_teacher_ref(session, teachers.get(t)) for t in teacher_ids]
    transfer = _file_ref(session, datasets.get(roles["transfer"]))
    return DistillRequest(
        tokenizer=_tokenizer_ref(session, teachers.get(teacher_ids[0])),
        teachers=teacher_refs,
        transfer=transfer,
        eval=_file_ref(session, datasets.get(roles["eval"])) if "eval" in roles else None,
        spec=JobSpec.model_validate(job.spec),
        workdir=str(workdir / "engine"),
        cache_dir=str(_soft_label_scope(settings, job.tenant_id, teacher_refs, transfer)),
        stop_file=str(workdir / "STOP"),
        checkpoint_every=settings.checkpoint_every_steps,
        checkpoint_every_seconds=settings.checkpoint_every_seconds,
        allow_torchscript=settings.allow_torchscript,
        device=settings.device,
    )


def _soft_label_scope(
    settings: Settings, tenant_id: str, teachers: list[FileRef], transfer: FileRef
) -> Path:
    """The soft-label cache folder of one tenant's teachers on one dataset (by content): all
    that a job's sandbox may read or add to, so it can never change another's labels."""
    content = "\n".join([tenant_id, *(t.sha256 for t in teachers), transfer.sha256])
    return settings.storage_dir / "softlabels" / hashlib.sha256(content.encode()).hexdigest()


def claim(job_id: str, settings: Settings) -> Claimed | None:
    with session_scope() as session:
        jobs = JobRepository(session)
        attempt = jobs.claim(
            job_id, worker=worker_name(), lease=_lease(settings), max_attempts=settings.max_attempts
        )
        if attempt is None:
            return None
        job = jobs.get(job_id)
        assert job is not None
        return Claimed(job_id, attempt, job.tenant_id, _request(session, job, settings))


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
        if stopping(settings):  # no job will come
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
            if pid.isdigit() and not pid_alive(int(pid)):
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


def _take_spare(settings: Settings, request: BaseModel, jobdir: Path) -> Child | None:
    """The spare, in ``jobdir`` (its sandbox's folder) and handed ``request``; None when
    there is no live spare with these limits."""
    global _spare
    child, _spare = _spare, None
    if child is None:
        return None
    limits = (child.threads, child.cpu_seconds, child.memory_bytes)
    if child.alive() and limits == _child_limits(settings):
        try:
            child.adopt(jobdir)
            child.send(request)
            return child
        except BrokenPipeError:  # it died just now: start cold instead
            pass
    if child.workdir == jobdir:  # adopted: the folder (and its checkpoints) is the job's now
        child.close()
    else:
        _drop(child)
    return None


class Run:
    """Drive one claimed job's child process until it ends or we lose the lease."""

    def __init__(self, claimed: Claimed, settings: Settings) -> None:
        self.c = claimed
        self.settings = settings
        self.events: queue.Queue[AnyEvent | None] = queue.Queue()
        self.last_write = 0.0
        self.last_beat = time.monotonic()
        self.last_poll = 0.0
        self.deadline = self.last_beat + settings.job_soft_time_limit_s
        self.pending: ProgressEvent | None = None
        self.written_key: tuple[Any, ...] = ()
        self.stage: str | None = None
        self.spare_asked = False
        checkpoints = Path(claimed.request.workdir) / "checkpoints"
        self.mirror = CheckpointMirror(get_storage(), claimed.job_id, checkpoints)
        self.soft_labels = SoftLabelMirror(get_storage(), Path(claimed.request.cache_dir))

    def _read(self, child: Child) -> None:
        for event in child.lines():
            self.events.put(event)
        self.events.put(None)

    def execute(self) -> None:
        workdir = Path(self.c.request.workdir).parent
        (workdir / "STOP").unlink(missing_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        self.mirror.pull()  # a job taken over from another host resumes from the store's copy
        self._mirror(self._pull_soft_labels)
        try:
            child = self._start_child(workdir)
        except SandboxError as exc:
            self._fail(exc.code, exc.message)
            return
        reader = threading.Thread(target=self._read, args=(child,), daemon=True)
        reader.start()
        try:
            self._loop(child, workdir)
        finally:
            child.kill()
            reader.join(timeout=5)  # it ends at the killed child's end of output
            if child.workdir == workdir:
                child.close()
            else:
                _drop(child)  # a spare: its private folder goes with it

    def _start_child(self, workdir: Path) -> Child:
        """The spare (its folder becomes the job's), else a new child in the job's folder."""
        threads, cpu_seconds, memory_bytes = _child_limits(self.settings)
        return _take_spare(self.settings, self.c.request, workdir) or Child(
            self.c.request,
            workdir=workdir,
            threads=threads,
            memory_bytes=memory_bytes,
            cpu_seconds=cpu_seconds,
            settings=self.settings,
        )

    def _loop(self, child: Child, workdir: Path) -> None:
        while True:
            try:
                event: AnyEvent | None | Literal[False] = self.events.get(timeout=STOP_POLL_S)
            except queue.Empty:
                event = False  # no event: only the heartbeat and the cancel check
            if not self._tick(workdir):
                log.warning(
                    "job %s: lease lost; stopping attempt %s", self.c.job_id, self.c.attempt
                )
                return
            if event is None:
                self._lost(child)
                return
            if event is False:
                continue
            if not self.spare_asked:
                # This job's child is up and talking: the next job's child imports torch now,
                # while this one runs, instead of after it (back-to-back jobs start warm).
                self.spare_asked = True
                start_spare(self.settings)
            if self._handle(event):
                return

    def _handle(self, event: AnyEvent) -> bool:
        """Relay one event of the child; True when it ends the run."""
        if isinstance(event, ProgressEvent):
            self.pending = event
            self._flush_progress()
        elif isinstance(event, EpochEvent):
            with session_scope() as session:
                record = event.record.model_dump()
                HistoryRepository(session).add_epoch(self.c.job_id, self.c.attempt, record)
        elif isinstance(event, CheckpointEvent | ResumedEvent | SoftLabelsEvent):
            # Copies only while this attempt holds the job: a zombie worker must not overwrite
            # the checkpoint that the attempt which took over resumes from.
            held = self._record(event)
            if held and isinstance(event, CheckpointEvent):
                self._mirror(self.mirror.push)
            elif held and isinstance(event, SoftLabelsEvent):
                self._mirror(lambda: self.soft_labels.push(event.key))
        elif isinstance(event, Outcome):
            self._flush_progress(force=True)
            self.soft_labels.wait()
            self._publish(event)
            return True
        elif isinstance(event, StoppedEvent):
            self._stopped(event.reason)
            return True
        elif isinstance(event, ErrorEvent):
            self._fail(event.code, event.message)
            return True
        else:  # an inspect answer to a distill request
            self._fail(
                ErrorCode.BAD_CHILD_OUTPUT, f"unexpected {event.event!r} event from the engine"
            )
            return True
        return False

    def _tick(self, workdir: Path) -> bool:
        """The time limit, the cancel and stop check (every STOP_POLL_S) and the heartbeat
        (every heartbeat_seconds). False when the lease was taken over."""
        now = time.monotonic()
        if now >= self.deadline:
            raise PastTimeLimit()
        if now - self.last_poll >= STOP_POLL_S:
            self.last_poll = now
            with session_scope() as session:
                cancel = JobRepository(session).cancel_requested(self.c.job_id)
            if cancel or stopping(self.settings):  # the engine checkpoints and stops
                atomic_write(workdir / "STOP", b"cancel" if cancel else b"shutdown")
        if now - self.last_beat < self.settings.heartbeat_seconds:
            return True
        self.last_beat = now
        with session_scope() as session:
            return JobRepository(session).heartbeat(
                self.c.job_id, self.c.attempt, _lease(self.settings)
            )

    def _stopped(self, reason: StopReason) -> None:
        """The engine stopped at the stop file, after a checkpoint. A cancel ends the job; a
        shutdown gives it back to the queue (``HandedBack``: the task's retry publishes it,
        and the next worker resumes from the checkpoint) unless a cancel came meanwhile or
        this was its last attempt, which ends it as a lost worker's would."""
        handed_back = False
        with session_scope() as session:
            jobs = JobRepository(session)
            if reason == "cancel" or jobs.cancel_requested(self.c.job_id):
                jobs.cancel_running(self.c.job_id, self.c.attempt)
            elif self.c.attempt < self.settings.max_attempts:
                # False when a cancel came just now: the sweep ends it at the lease's end.
                handed_back = jobs.release(self.c.job_id, self.c.attempt, reason="worker_stopped")
            else:
                message = f"the worker stopped during the job's last attempt ({self.c.attempt})"
                jobs.fail(
                    self.c.job_id, self.c.attempt, code=ErrorCode.WORKER_LOST, message=message
                )
        if handed_back:
            raise HandedBack("the worker is stopping; the job went back to the queue")
        self._mirror(self.mirror.drop)

    def _lost(self, child: Child) -> None:
        """The child died without an answer (killed, out of memory): like a lost worker's,
        the job goes back to the queue (``ChildLost``, a transient fault) and the next
        attempt resumes from its checkpoint; on the last attempt it fails with the reason."""
        message = child.crash_message()
        if self.c.attempt >= self.settings.max_attempts:
            last = f"{message} (attempt {self.c.attempt}, the last)"
            self._fail(ErrorCode.WORKER_CRASHED, last)
            return
        log.warning("job %s: the sandbox child was lost: %s", self.c.job_id, message)
        raise ChildLost(message)

    def _flush_progress(self, force: bool = False) -> None:
        event = self.pending
        if event is None:
            return
        key = (event.stage, event.epoch)
        now = time.monotonic()
        if not force and key == self.written_key and now - self.last_write < PROGRESS_EVERY_S:
            return
        values: dict[str, Any] = {
            "stage": event.stage,
            "progress": event.progress,
            "epoch": event.epoch or 0,
        }
        if event.metrics:
            values["metrics"] = event.metrics
        with session_scope() as session:
            jobs = JobRepository(session)
            if jobs.progress(self.c.job_id, self.c.attempt, **values) and event.stage != self.stage:
                jobs.event(self.c.job_id, JobEventKind.STAGE, self.c.attempt, stage=event.stage)
                self.stage = event.stage
        self.pending, self.written_key, self.last_write = None, key, now

    def _fail(self, code: str, message: str) -> None:
        with session_scope() as session:
            JobRepository(session).fail(self.c.job_id, self.c.attempt, code=code, message=message)
        self._mirror(self.mirror.drop)

    def _record(self, event: CheckpointEvent | ResumedEvent | SoftLabelsEvent) -> bool:
        """Store the event in the job's history (a resumed run's also the epochs its
        checkpoint had finished that no attempt stored); False once the lease was lost."""
        data = event.model_dump(mode="json", exclude={"event", "records"})
        with session_scope() as session:
            if isinstance(event, ResumedEvent):
                records = [r.model_dump() for r in event.records]
                HistoryRepository(session).add_missing_epochs(
                    self.c.job_id, self.c.attempt, records
                )
            kind = JobEventKind(event.event)
            return JobRepository(session).fenced_event(self.c.job_id, self.c.attempt, kind, **data)

    def _pull_soft_labels(self) -> None:
        """The soft labels an earlier attempt computed, fetched when this host lacks them."""
        with session_scope() as session:
            stored = HistoryRepository(session).last_event(self.c.job_id, JobEventKind.SOFT_LABELS)
            key = None if stored is None else (stored.data or {}).get("key")
        if isinstance(key, str):
            self.soft_labels.pull(key)

    def _mirror(self, action: Callable[[], object]) -> None:
        """Copy or drop job state in the store; a failure costs only the copy, not the job."""
        try:
            action()
        except SoftTimeLimitExceeded:
            raise  # Celery's limit, come while copying: the job's end, not the copy's
        except Exception as exc:
            log.warning("job %s: checkpoint copy in storage failed: %s", self.c.job_id, exc)

    def _store_files(
        self, files: dict[Any, str], tag: str, rows: list[StoredFile]
    ) -> dict[str, Artifact]:
        """Store one student's files (a candidate's: in a folder named ``tag``); their
        artifacts. The rows to add go to ``rows``."""
        storage = get_storage()
        artifacts: dict[str, Artifact] = {}
        for fmt, path in files.items():
            ext = EXTENSIONS[fmt]
            folder = f"students/{self.c.job_id}/attempt-{self.c.attempt}/{tag + '/' if tag else ''}"
            key = f"{folder}student.{ext}"
            put = storage.put_file(key, Path(path))
            file_id = new_id("file")
            filename = f"student-{self.c.job_id}{'-' + tag if tag else ''}.{ext}"
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
            artifacts[fmt] = Artifact(
                file_id=file_id,
                key=key,
                sha256=put.sha256,
                size_bytes=put.size_bytes,
                filename=filename,
            )
        return artifacts

    def _publish(self, result: Outcome) -> None:
        """Store the students under keys derived from the job, then finish in one transaction.
        A sweep's candidates each get a folder; the chosen one's files are also the job's."""
        storage = get_storage()
        rows: list[StoredFile] = []
        if result.candidates:
            listed = [
                self._store_files(files, f"candidate-{i}", rows)
                for i, files in enumerate(result.candidates)
            ]
            artifacts = Artifacts(student=listed[result.report.chosen or 0], candidates=listed)
        else:
            artifacts = Artifacts(student=self._store_files(result.files, "", rows))
        report = result.report.model_copy(
            update={"student_files": {f: a.sha256 for f, a in artifacts.student.items()}}
        ).model_dump(mode="json")
        with session_scope() as session:
            finished = JobRepository(session).finish(
                self.c.job_id,
                self.c.attempt,
                report=report,
                artifacts=artifacts.model_dump(mode="json"),
                metrics=result.metrics,
            )
            if finished:
                for row in rows:
                    StoredFileRepository(session).add(row)
        if not finished:
            for art in artifacts.every():
                storage.delete(art.key)
            return
        observe_stages(report)
        self._mirror(self.mirror.drop)
        shutil.rmtree(Path(self.c.request.workdir).parent, ignore_errors=True)


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
            start_spare(settings)  # unless the run started it: for the next job
    except (SoftTimeLimitExceeded, PastTimeLimit):
        _fail_past_limit(job_id, claimed.attempt, settings)
    except HandedBack:
        raise  # queued again already; the task's retry publishes it for the next worker
    except OSError as exc:
        if not is_disk_full(exc):
            _give_back(job_id, claimed.attempt, settings, exc)
            raise
        with session_scope() as session:
            JobRepository(session).fail(
                job_id, claimed.attempt, code=ErrorCode.STORAGE_FULL, message=str(exc)
            )
    except TRANSIENT as exc:
        _give_back(job_id, claimed.attempt, settings, exc)
        raise


def _fail_past_limit(job_id: str, attempt: int, settings: Settings) -> None:
    limit = settings.job_soft_time_limit_s
    for _ in range(2):
        try:
            log.warning("job %s: past the time limit of %s s", job_id, limit)
            with session_scope() as session:
                JobRepository(session).fail(
                    job_id,
                    attempt,
                    code=ErrorCode.TIME_LIMIT,
                    message=f"the job ran past the limit of {limit} s",
                )
            return
        except SoftTimeLimitExceeded:
            continue  # Celery's signal, come while this wrote the run's own: write it again


def _give_back(job_id: str, attempt: int, settings: Settings, exc: Exception) -> None:
    """Give the job back at once so that the retry (with backoff) can claim it again; if the
    database itself is down, the lease runs out and the sweep re-publishes it. On the last
    attempt nothing could claim it again: it fails, saying what kept going wrong."""
    with contextlib.suppress(*TRANSIENT), session_scope() as session:
        jobs = JobRepository(session)
        if attempt < settings.max_attempts:
            jobs.release(job_id, attempt)
            return
        log.error("job %s: last attempt (%s) failed", job_id, attempt, exc_info=exc)
        message = f"{attempt} attempts failed; the last with {type(exc).__name__}: {exc}"
        jobs.fail(job_id, attempt, code=ErrorCode.INTERNAL, message=message[:500])


def reclaim_orphans(publish: Any) -> int:
    """At worker start: jobs of this host whose worker process is gone (a restart after a
    crash or a stop) need not wait for their lease to run out. Returns how many."""
    ids = []
    with session_scope() as session:
        jobs = JobRepository(session)
        for job in jobs.running_on(f"{socket.gethostname()}:"):
            pid = (job.worker or "").rsplit(":", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)) and jobs.expire_lease(job.id, job.attempt):
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
