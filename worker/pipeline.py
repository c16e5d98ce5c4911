"""One job, end to end: claim → run the engine in the sandbox → relay progress → publish
the student and the report. The job row is the truth; every write is fenced by attempt."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
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
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

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
from core.errors import ErrorCode, is_disk_full
from core.logs import log_context, set_log_context
from core.settings import Settings, engine_limits, get_settings
from core.spec import JobSpec
from core.storage import get_storage
from models import Dataset, Job, Teacher, utcnow
from models.job_repository import JobRepository
from models.repositories import DatasetRepository, StoredFileRepository, TeacherRepository
from worker.bwrap import job_memory_bytes
from worker.checkpoint_sync import CheckpointMirror, SoftLabelMirror
from worker.metrics import observe_stages
from worker.publishing import publish
from worker.recording import Recorder
from worker.sandbox import Child, SandboxError, job_threads
from worker.shutdown import pid_alive, stopping
from worker.spare import Spare, drop

log = logging.getLogger(__name__)

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
        limits=engine_limits(settings),
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


def _child_limits(settings: Settings) -> tuple[int, int, int]:
    return job_threads(settings), settings.sandbox_cpu_seconds, job_memory_bytes(settings)


# This worker process's spare child, for its next job (worker/spare.py).
SPARE = Spare(_child_limits)


class Run:
    """Drive one claimed job's child process until it ends or the lease is lost: the event
    loop. What it writes about the job is the ``Recorder``'s, the students the publisher's
    (worker/publishing.py), the store copies of its checkpoints and soft labels the
    mirrors' (worker/checkpoint_sync.py)."""

    def __init__(self, claimed: Claimed, settings: Settings) -> None:
        self.c = claimed
        self.settings = settings
        self.events: queue.Queue[AnyEvent | None] = queue.Queue()
        self.last_beat = time.monotonic()
        self.last_poll = 0.0
        self.deadline = self.last_beat + settings.job_soft_time_limit_s
        self.spare_asked = False
        self.record = Recorder(claimed.job_id, claimed.attempt)
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
                drop(child)  # a spare: its private folder goes with it

    def _start_child(self, workdir: Path) -> Child:
        """The spare (its folder becomes the job's), else a new child in the job's folder."""
        threads, cpu_seconds, memory_bytes = _child_limits(self.settings)
        return SPARE.take(self.settings, self.c.request, workdir) or Child(
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
                SPARE.start(self.settings)
            if self._handle(event):
                return

    def _handle(self, event: AnyEvent) -> bool:
        """Relay one event of the child; True when it ends the run."""
        if isinstance(event, ProgressEvent):
            self.record.progress(event)
        elif isinstance(event, EpochEvent):
            self.record.epoch(event)
        elif isinstance(event, CheckpointEvent | ResumedEvent | SoftLabelsEvent):
            # Copies only while this attempt holds the job: a zombie worker must not overwrite
            # the checkpoint that the attempt which took over resumes from.
            held = self.record.fenced(event)
            if held and isinstance(event, CheckpointEvent):
                self._mirror(self.mirror.push)
            elif held and isinstance(event, SoftLabelsEvent):
                self._mirror(lambda: self.soft_labels.push(event.key))
        elif isinstance(event, Outcome):
            self.record.progress(force=True)
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
            cancel = self.record.cancel_requested()
            if cancel or stopping(self.settings):  # the engine checkpoints and stops
                atomic_write(workdir / "STOP", b"cancel" if cancel else b"shutdown")
        if now - self.last_beat < self.settings.heartbeat_seconds:
            return True
        self.last_beat = now
        return self.record.heartbeat(_lease(self.settings))

    def _stopped(self, reason: StopReason) -> None:
        """A cancel ends the job; a shutdown hands it back (``HandedBack``: the task's retry
        publishes it, and the next worker resumes from the checkpoint): ``Recorder.stopped``."""
        if self.record.stopped(reason, self.settings.max_attempts):
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

    def _fail(self, code: str, message: str) -> None:
        self.record.fail(code, message)
        self._mirror(self.mirror.drop)

    def _pull_soft_labels(self) -> None:
        """The soft labels an earlier attempt computed, fetched when this host lacks them."""
        key = self.record.soft_labels_key()
        if key is not None:
            self.soft_labels.pull(key)

    def _mirror(self, action: Callable[[], object]) -> None:
        """Copy or drop job state in the store; a failure costs only the copy, not the job."""
        try:
            action()
        except SoftTimeLimitExceeded:
            raise  # Celery's limit, come while copying: the job's end, not the copy's
        except Exception as exc:
            log.warning("job %s: checkpoint copy in storage failed: %s", self.c.job_id, exc)

    def _publish(self, result: Outcome) -> None:
        report = publish(self.c.job_id, self.c.attempt, self.c.tenant_id, result)
        if report is None:  # the lease was lost meanwhile: the job is another attempt's
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
            SPARE.start(settings)  # unless the run started it: for the next job
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
