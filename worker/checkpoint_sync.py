"""A job's training checkpoint and soft labels mirrored to object storage, so any worker on any
host resumes it.

The engine writes its checkpoint folder on this host (``checkpoint.json`` naming a safetensors
file, the JSON being the commit point). With a remote store (S3) the worker copies each new
checkpoint there in the same order, tensors first and the pointer last, under
``checkpoints/<job id>/``; a worker on another host that takes the job over pulls the pointer
and the file it names before the engine starts, and the engine's own checks (sha256,
fingerprint, strict keys) decide whether it resumes. With the local store every worker
already shares the data folder, so nothing is copied.

Soft labels are content-addressed (their cache key covers the teachers, the data and every
setting that changes them): once a job's are computed the worker copies the file to
``softlabels/<key>.safetensors`` in the background, and a worker on another host that resumes
the job fetches it instead of running the teachers again. The engine checks the key inside.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from core.contracts import soft_labels_file
from core.storage import LocalStorage, Storage

log = logging.getLogger(__name__)
POINTER = "checkpoint.json"


def _prefix(job_id: str) -> str:
    return f"checkpoints/{job_id}"


def _remote(storage: Storage) -> bool:
    return not isinstance(storage, LocalStorage)


def _atomic_copy(storage: Storage, key: str, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.pull")
    with storage.open(key) as src, open(tmp, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)


class CheckpointMirror:
    """Push the checkpoint in ``folder`` when it changes; pull it before a resumed attempt."""

    def __init__(self, storage: Storage, job_id: str, folder: Path) -> None:
        self.storage, self.job_id, self.folder = storage, job_id, folder
        self.pushed: bytes | None = None

    def pull(self) -> bool:
        """Fetch the stored checkpoint when this host has none. True when one was fetched."""
        if not _remote(self.storage) or (self.folder / POINTER).exists():
            return False
        pointer_key = f"{_prefix(self.job_id)}/{POINTER}"
        if not self.storage.exists(pointer_key):
            return False
        with self.storage.open(pointer_key) as fh:
            pointer = fh.read()
        tensors = Path(json.loads(pointer)["tensors_file"]).name
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_copy(self.storage, f"{_prefix(self.job_id)}/{tensors}", self.folder / tensors)
        _atomic_copy(self.storage, pointer_key, self.folder / POINTER)
        self.pushed = pointer
        log.info("job %s: checkpoint pulled from storage (%s)", self.job_id, tensors)
        return True

    def push(self) -> bool:
        """Copy a new local checkpoint to the store, tensors first. True when one was copied."""
        if not _remote(self.storage):
            return False
        try:
            pointer = (self.folder / POINTER).read_bytes()
        except FileNotFoundError:
            return False
        if pointer == self.pushed:
            return False
        tensors = Path(json.loads(pointer)["tensors_file"]).name
        prefix = _prefix(self.job_id)
        try:
            self.storage.put_file(f"{prefix}/{tensors}", self.folder / tensors)
        except FileNotFoundError:  # a newer checkpoint replaced it meanwhile: the next push
            return False
        self.storage.put_stream(f"{prefix}/{POINTER}", iter([pointer]))
        if self.pushed is not None:
            old = Path(json.loads(self.pushed)["tensors_file"]).name
            if old != tensors:
                self.storage.delete(f"{prefix}/{old}")
        self.pushed = pointer
        return True

    def drop(self) -> None:
        """Remove the stored checkpoint (the job has ended)."""
        if not _remote(self.storage):
            return
        # The whole prefix: also what a killed host left half-copied.
        self.storage.delete_prefix(_prefix(self.job_id))


class SoftLabelMirror:
    """Copy a job's computed soft labels to the store; fetch them where a job resumes."""

    def __init__(self, storage: Storage, cache_dir: Path) -> None:
        self.storage, self.cache_dir = storage, cache_dir
        self.pushing: threading.Thread | None = None

    @staticmethod
    def _key(key: str) -> str:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a soft-label key: {key!r}")
        return f"softlabels/{key}.safetensors"

    def pull(self, key: str) -> bool:
        """Fetch the labels of ``key`` when this host lacks them. True when fetched."""
        local = soft_labels_file(self.cache_dir, key)
        if not _remote(self.storage) or local.exists():
            return False
        if not self.storage.exists(self._key(key)):
            return False
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_copy(self.storage, self._key(key), local)
        log.info("soft labels %s… pulled from storage", key[:12])
        return True

    def push(self, key: str) -> None:
        """Start copying the labels of ``key`` to the store (in a thread: a large file must
        not hold up the job's heartbeat); nothing when the store has them already."""
        if not _remote(self.storage):
            return
        self.pushing = threading.Thread(target=self._push, args=(key,), daemon=True)
        self.pushing.start()

    def wait(self, timeout: float = 600.0) -> None:
        """Let a copy under way finish (a job ends with its labels in the store)."""
        if self.pushing is not None:
            self.pushing.join(timeout)

    def _push(self, key: str) -> None:
        try:
            if not self.storage.exists(self._key(key)):
                self.storage.put_file(self._key(key), soft_labels_file(self.cache_dir, key))
        except Exception as exc:  # a failed copy costs another host a teacher pass, no more
            log.warning("soft labels %s…: copy to storage failed: %s", key[:12], exc)
