"""A job's training checkpoint mirrored to object storage, so any worker on any host resumes it.

The engine writes its checkpoint folder on this host (``checkpoint.json`` naming a safetensors
file, the JSON being the commit point). With a remote store (S3) the worker copies each new
checkpoint there in the same order, tensors first and the pointer last, under
``checkpoints/<job id>/``; a worker on another host that takes the job over pulls the pointer
and the file it names before the engine starts, and the engine's own checks (sha256,
fingerprint, strict keys) decide whether it resumes. With the local store every worker
already shares the data folder, so nothing is copied.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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
