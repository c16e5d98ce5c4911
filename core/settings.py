"""One settings object, read from ``STILLHOUSE_*`` environment variables once."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STILLHOUSE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")

    # Empty means "the embedded default under data_dir" (SQLite / filesystem broker).
    database_url: str = ""
    broker_url: str = ""

    # Prefix of every Redis key the broker writes (several deployments can share one Redis).
    broker_key_prefix: str = ""

    # "text", or "json": one JSON object a line, with the job and tenant ids where known.
    log_format: Literal["text", "json"] = "text"

    bootstrap_api_key: str | None = None
    # Each API process remembers a successful key lookup this long: a revoked key keeps
    # working at most this many seconds. 0 looks every request up in the database.
    auth_cache_seconds: float = 5.0

    # Quotas per tenant (0: no limit). Over them: 429 on submit, 413 on upload.
    max_active_jobs: int = 10
    max_stored_bytes: int = 100 * 1024**3
    # Token bucket per API key: this many requests a second on average, bursts up to
    # rate_limit_burst (0: no limit). Shared through Redis when the broker is Redis.
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 100
    # Failed authentications (unknown or revoked keys) per client address: past the burst,
    # 429 before any key lookup, refilled at this rate (0: no limit).
    auth_failures_per_second: float = 1.0
    auth_failure_burst: int = 30

    # Webhooks: never to loopback, link-local or private addresses unless allowed (tests,
    # development). Retries back off exponentially from webhook_backoff_seconds, doubling up
    # to webhook_backoff_max_seconds, for webhook_retry_hours after the event.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_backoff_seconds: float = 5.0
    webhook_backoff_max_seconds: float = 3600.0
    webhook_retry_hours: float = 24.0

    # Object storage: empty = the data folder; ``s3://bucket/prefix`` = an S3-compatible store
    # (``s3_endpoint_url`` for MinIO and the like; credentials from the standard AWS_* chain).
    storage_url: str = ""
    s3_endpoint_url: str | None = None
    # Each host's cache of objects downloaded from S3 (by sha256), least recently used first out.
    cache_max_bytes: int = 20 * 1024**3

    # A request's head (request line and header fields): past either, 431 and the connection
    # closes, counted as the bytes arrive.
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    max_upload_bytes: int = 4 * 1024**3
    # An upload's form beside its file: parts, and bytes of part headers and fields together.
    max_form_parts: int = 16
    max_form_bytes: int = 64 * 1024
    # Every request body but the streamed uploads (JSON job specs): larger ones get 413
    # before they are read.
    max_body_bytes: int = 1024**2
    allow_torchscript: bool = False

    # Archive and image caps of untrusted uploads.
    max_archive_entries: int = 100_000
    max_unpacked_bytes: int = 8 * 1024**3
    max_image_pixels: int = 4096 * 4096
    # No archive member over 1 MiB may inflate more than this many times its stored size
    # (a 1 MB .npz whose array inflates to 1 GiB, a 2 MB zip holding a 2 GiB "image").
    max_compression_ratio: int = 20

    # Tasks are published through an outbox table (written with the row they concern);
    # each API process retries what the broker did not take this often, as does the sweep.
    outbox_drain_seconds: float = 5.0

    # Jobs, and uploads' validations: a lease renewed every heartbeat, the sweep's period.
    lease_seconds: int = 60
    heartbeat_seconds: int = 10
    max_attempts: int = 3
    sweep_seconds: int = 15
    job_soft_time_limit_s: int = 6 * 3600
    job_hard_time_limit_s: int = 6 * 3600 + 300
    # A checkpoint costs ~9 ms (MNIST MLP student, fsynced); 1,000 steps is 2-3 s of CPU work.
    checkpoint_every_steps: int = 1000
    # ...and by time: a killed worker loses at most this much training, whatever a step
    # costs or the set's size (0: by steps only).
    checkpoint_every_seconds: float = 30.0

    # The jobs' device: "cpu", "cuda" or "cuda:N"; unset, CUDA when there is one, else CPU.
    device: str | None = None

    # The sandbox of everything that parses or runs a user file (worker/bwrap.py). "none"
    # turns it off: user files then run with the worker's view of the host and its network;
    # only for hosts that are a sandbox themselves (README.md, "The sandbox").
    sandbox: Literal["bwrap", "none"] = "bwrap"
    # Memory a job's engine child may allocate on a CPU host (RLIMIT_DATA: maps of files do
    # not count; a GPU host's has none: CUDA maps far more memory than it uses).
    sandbox_memory_bytes: int = 16 * 1024**3
    # Memory an upload's validation may allocate (RLIMIT_DATA: the map of the file does not
    # count), the teacher's dry run included: a file that needs more is rejected as too_large.
    validation_memory_bytes: int = 2 * 1024**3
    sandbox_file_bytes: int = 16 * 1024**3
    # What one sandbox (a job's child, a validation) may write in all: its folder, its /tmp.
    # 0: a quarter of the disk that holds data_dir.
    sandbox_disk_bytes: int = 0
    sandbox_max_processes: int = 1024
    sandbox_cpu_seconds: int = 6 * 3600
    torch_threads: int = Field(default=0, description="0: one per core of the worker's host")
    # Each job worker process keeps one sandbox child started ahead, imports done (about
    # 3 s of a job's fixed cost on a CPU, and ~300 MB of memory while it waits).
    spare_child: bool = True

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'stillhouse.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def storage_dir(self) -> Path:
        return (self.data_dir / "files").resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.data_dir / "cache").resolve()

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def redis_url(self) -> str | None:
        """The broker's Redis, when the broker is Redis (shared rate limits use it)."""
        url = self.resolved_broker_url
        return url if url.startswith(("redis://", "rediss://", "unix://")) else None

    @property
    def metrics_dir(self) -> Path:
        """Prometheus multiprocess files of every API and worker process of this data dir."""
        return (self.data_dir / "metrics").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
