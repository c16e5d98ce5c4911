"""One settings object, read from ``STILLHOUSE_*`` environment variables once."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.contracts import CHECKPOINT_EVERY_SECONDS, CHECKPOINT_EVERY_STEPS, EngineLimits

_LIMITS = EngineLimits()  # the engine's defaults are the settings' defaults


def engine_limits(settings: Settings) -> EngineLimits:
    """The caps the host sends the engine in every request."""
    return EngineLimits(
        max_archive_entries=settings.max_archive_entries,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_compression_ratio=settings.max_compression_ratio,
    )


class Settings(BaseSettings):
    """Every setting; the docs' settings reference is generated from these descriptions."""

    model_config = SettingsConfigDict(env_prefix="STILLHOUSE_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, description="Port the API listens on.")
    data_dir: Path = Field(
        default=Path("var"),
        description="Uploads, soft labels, checkpoints, students; with the embedded default "
        "also the SQLite database and the broker's queue.",
    )

    # Empty means "the embedded default under data_dir" (SQLite / filesystem broker).
    database_url: str = Field(
        default="",
        description="Empty: SQLite in the data dir. E.g. "
        "`postgresql+psycopg://user:password@host:5432/stillhouse`.",
    )
    broker_url: str = Field(
        default="",
        description="Empty: a filesystem broker in the data dir. E.g. `redis://host:6379/0`.",
    )
    broker_key_prefix: str = Field(
        default="",
        description="Prefix of every Redis key the broker writes (several deployments can "
        "share one Redis).",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: the API and the workers write one JSON object a line, with "
        "`job_id` and `tenant_id` where known (`make run` adds `service`: the process's name).",
    )

    bootstrap_api_key: str | None = Field(
        default=None,
        description="When set, a key with exactly this value exists for the tenant `default` "
        "(handy for scripts and tests); unset, `make run` creates a random key on the first "
        "start and prints it.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        description="Each API process remembers a successful key lookup this long, so a "
        "revoked key stops working within it; `0` looks every request up in the database.",
    )

    # Quotas per tenant (0: no limit). Over them: 429 on submit, 413 on upload.
    max_active_jobs: int = Field(
        default=10,
        description="Queued or running jobs per tenant; one more submit gets 429 with "
        "`Retry-After` (`0`: no limit).",
    )
    max_stored_bytes: int = Field(
        default=100 * 1024**3,
        description="Bytes of uploads and students a tenant may keep; an upload over it gets "
        "413 (`0`: no limit).",
    )
    rate_limit_per_second: float = Field(
        default=50.0,
        description="Requests per second per API key on average (a token bucket; in the API "
        "process, or shared through Redis when the broker is Redis); over it: 429 with "
        "`Retry-After` (`0`: no limit).",
    )
    rate_limit_burst: int = Field(
        default=100,
        description="Requests a key may make at once before the rate applies.",
    )
    auth_failures_per_second: float = Field(
        default=1.0,
        description="Failed authentications (unknown or revoked keys) per client address: "
        "past `STILLHOUSE_AUTH_FAILURE_BURST`, 429 with `Retry-After` before any key lookup, "
        "refilled at this rate (`0`: no limit). Behind a proxy, set uvicorn's "
        "`FORWARDED_ALLOW_IPS` so the client's own address counts.",
    )
    auth_failure_burst: int = Field(
        default=30, description="Failed authentications an address may make at once."
    )

    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private and link-local addresses "
        "(development and tests only: otherwise a tenant could make the service call your "
        "internal network).",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, description="Connect and read timeout of one delivery attempt."
    )
    webhook_backoff_seconds: float = Field(
        default=5.0,
        description="Wait before the first retry of a failed delivery; doubles per attempt up "
        "to `STILLHOUSE_WEBHOOK_BACKOFF_MAX_SECONDS`.",
    )
    webhook_backoff_max_seconds: float = Field(
        default=3600.0, description="The longest wait between two delivery attempts."
    )
    webhook_retry_hours: float = Field(
        default=24.0,
        description="A delivery that has not landed this long after its event is given up "
        "(`failed` in the delivery log).",
    )

    storage_url: str = Field(
        default="",
        description="Empty: uploads and students in the data dir. `s3://bucket/prefix`: in "
        "any S3-compatible store (multipart uploads, ranged reads); credentials from the "
        "standard `AWS_*` variables.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API's address for MinIO, moto and the like (unset: AWS).",
    )
    cache_max_bytes: int = Field(
        default=20 * 1024**3,
        description="Each host's cache of objects read from S3 (by sha256, least recently "
        "used out first).",
    )

    max_header_bytes: int = Field(
        default=64 * 1024,
        description="A request's head (request line and header fields): past it, 431 and the "
        "connection closes, counted as the bytes arrive.",
    )
    max_header_count: int = Field(
        default=100, description="Header fields in one request: past it, 431 and a close."
    )
    max_upload_bytes: int = Field(default=4 * 1024**3, description="Larger uploads get 413.")
    max_form_parts: int = Field(
        default=16, description="Parts of an upload's form, the file included: past it, 413."
    )
    max_form_bytes: int = Field(
        default=64 * 1024,
        description="Bytes of an upload's form beside its file (part headers and fields "
        "together): past it, 413.",
    )
    max_form_tokenizer_bytes: int = Field(
        default=32 * 1024**2,
        description="A teacher upload's `tokenizer` part (a Hugging Face tokenizer.json), held "
        "in memory while the form streams and counted apart from max_form_bytes: past it, "
        "413. A BERT vocabulary's tokenizer.json is about 0.7 MB, a 250 k-token one about "
        "17 MB.",
    )
    max_body_bytes: int = Field(
        default=1024**2,
        description="Every other request body (JSON job specs): larger ones get 413 before "
        "they are read.",
    )
    allow_torchscript: bool = Field(
        default=False,
        description="Accept TorchScript teachers (no safe loader exists: only for files you "
        "trust).",
    )

    max_archive_entries: int = Field(
        default=_LIMITS.max_archive_entries,
        description="Entries of an uploaded archive (image zip, `.npz`).",
    )
    max_unpacked_bytes: int = Field(
        default=_LIMITS.max_unpacked_bytes,
        description="What an uploaded archive may unpack to, by its members' declared sizes.",
    )
    max_image_pixels: int = Field(
        default=_LIMITS.max_image_pixels,
        description="Pixels of one image (4096²); it also caps an image member's size (4 "
        "bytes a pixel + 1 MiB), checked before the member is read.",
    )
    max_compression_ratio: int = Field(
        default=_LIMITS.max_compression_ratio,
        description="No archive member over 1 MiB may inflate more than this many times its "
        "stored size (zip bombs: a 1 MB `.npz` holding a 1 GiB array); store such data with "
        "`np.savez` rather than `np.savez_compressed`.",
    )

    outbox_drain_seconds: float = Field(
        default=5.0,
        description="A task the broker refused (Redis down) waits in the database's outbox; "
        "each API process, and the worker's sweep, retries it this often until the broker "
        "takes it.",
    )

    lease_seconds: int = Field(
        default=60,
        description="How long a worker's claim on a job, or on an upload's validation, lasts "
        "without a heartbeat; one whose lease ran out is handed out again by the sweep.",
    )
    heartbeat_seconds: int = Field(
        default=10,
        description="How often a running job, a running validation and each worker refresh "
        "their heartbeat; "
        "`/readyz` lists the workers seen within three periods.",
    )
    max_attempts: int = Field(
        default=3,
        description="Attempts a job gets (a lost worker, a crashed sandbox child or a stopped "
        "worker each cost one) before it fails; an upload whose validation lost this many "
        "workers is rejected as `worker_lost`.",
    )
    sweep_seconds: int = Field(
        default=15,
        description="How often beat runs the sweep that re-queues jobs and validations of dead "
        "workers and delivers webhooks.",
    )
    job_soft_time_limit_s: int = Field(
        default=6 * 3600,
        description="A job's own deadline: past it the run stops its engine and fails the "
        "job (Celery's soft limit comes 30 s later as a backstop).",
    )
    job_hard_time_limit_s: int = Field(
        default=6 * 3600 + 300,
        description="Celery's hard time limit of a job's task: the worker process is killed.",
    )
    # A checkpoint costs ~9 ms (MNIST MLP student, fsynced); 1,000 steps is 2-3 s of CPU work.
    checkpoint_every_steps: int = Field(
        default=CHECKPOINT_EVERY_STEPS,
        description="Training checkpoints every this many steps (a resumed attempt starts "
        "from the last one); `0` turns them off.",
    )
    checkpoint_every_seconds: float = Field(
        default=CHECKPOINT_EVERY_SECONDS,
        description="Also a checkpoint once this many seconds passed since the last one, so "
        "a killed worker loses at most this much training whatever the dataset's size (`0`: "
        "by steps only).",
    )

    device: str | None = Field(
        default=None,
        description="The jobs' device: `cpu`, `cuda` or `cuda:N`; unset, CUDA when the worker "
        "has it, else CPU.",
    )

    sandbox: Literal["bwrap", "none"] = Field(
        default="bwrap",
        description="The sandbox of every user file (worker/bwrap.py; see the security "
        "model). `none` turns it off: teacher code and file parsers then run with the "
        "worker's view of the host and its network. Only for hosts that are a sandbox "
        "themselves.",
    )
    sandbox_memory_bytes: int = Field(
        default=16 * 1024**3,
        description="Memory a job's engine may allocate on a CPU host (`RLIMIT_DATA`: maps of "
        "files do not count; none on a GPU host: CUDA maps far more memory than it uses).",
    )
    validation_memory_bytes: int = Field(
        default=2 * 1024**3,
        description="Memory an upload's validation may allocate (`RLIMIT_DATA`: the map of the "
        "file does not count), the teacher's dry run included; a file that needs more is "
        "rejected as `too_large`.",
    )
    sandbox_file_bytes: int = Field(
        default=16 * 1024**3, description="Largest file a sandboxed process may write."
    )
    sandbox_disk_bytes: int = Field(
        default=0,
        description="What one sandbox may write in all (its job folder and `/tmp`): no file "
        "may pass it (the write fails), and a sandbox whose files pass it together is "
        "stopped. `0`: a quarter of the disk that holds `STILLHOUSE_DATA_DIR`.",
    )
    sandbox_max_processes: int = Field(
        default=1024,
        description="Processes and threads of the sandbox's user (`RLIMIT_NPROC`): per "
        "sandbox under a root worker (each sandbox has a uid of its own), shared with the "
        "worker's own processes otherwise.",
    )
    sandbox_cpu_seconds: int = Field(
        default=6 * 3600,
        description="CPU time of a job's engine (an upload's validation: 600 s).",
    )
    torch_threads: int = Field(
        default=0,
        description="Torch threads of a job (`0`: one per core of the worker's host); set 1 "
        "on a small shared machine.",
    )
    spare_child: bool = Field(
        default=True,
        description="Each job worker process keeps one sandboxed child started ahead (torch "
        "imported, exporters warmed: ~2.5 s off every job; while it waits, ~300 MB of its "
        "own memory, ~500 MB resident); each validate worker process two (the teachers' "
        "loaders imported, ~350 MB resident; the datasets', ~45 MB), so that an upload is "
        "inspected without waiting for imports.",
    )

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
