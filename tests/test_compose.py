"""docker-compose.yml and the Dockerfiles, checked without Docker: the production shape, and
the same commands that `make run` (stillhouse_server/supervisor.py) starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML comes with uvicorn[standard]

from core.settings import Settings
from stillhouse_server.supervisor import processes

ROOT = Path(__file__).resolve().parent.parent
DATA = "/data"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def supervised() -> dict[str, list[str]]:
    """What `stillhouse run` starts, as the console commands a container would run."""
    settings = Settings(host="0.0.0.0", port=8000, data_dir=Path(DATA))
    commands: dict[str, list[str]] = {}
    for proc in processes(settings):
        argv = list(proc.argv)
        assert argv[1] == "-m", argv  # [python, -m, module, ...]
        # --quiet drops Celery's start-up banner from make run's one terminal; a container's
        # log keeps it.
        commands[proc.name] = [arg for arg in argv[2:] if arg != "--quiet"]
    return commands


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def _without_embedded_beat(argv: list[str]) -> list[str]:
    """The supervisor runs beat inside the validate worker (-B -s FILE); compose has a service."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "-B":
            continue
        elif arg == "-s":
            skip = True
        else:
            out.append(arg)
    return out


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "minio",
        "minio-bucket",
        "migrate",
        "api",
        "worker",
        "worker-validate",
        "beat",
    }
    assert _service(compose, "postgres")["image"] == "postgres:16"
    assert _service(compose, "redis")["image"] == "redis:7"
    assert "pg_isready" in " ".join(_service(compose, "postgres")["healthcheck"]["test"])
    assert "ping" in _service(compose, "redis")["healthcheck"]["test"]
    redis = _service(compose, "redis")
    assert "--requirepass" in redis["command"]  # the broker is not open to anyone who connects
    assert redis["environment"]["REDISCLI_AUTH"]  # so that the health check authenticates
    assert _service(compose, "minio")["image"].startswith("minio/minio")
    assert "mc mb" in " ".join(_service(compose, "minio-bucket")["entrypoint"])


def test_api_command_is_the_supervisors(
    compose: dict[str, Any], supervised: dict[str, list[str]]
) -> None:
    api = _service(compose, "api")
    assert api["command"] == ["python", "-m", *supervised["api"]]
    assert supervised["api"][0] == "api.serve"  # uvicorn with the request-head limits
    assert "8000:8000" in api["ports"][0] or api["ports"][0].endswith(":8000")
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert api["build"]["dockerfile"] == "docker/Dockerfile.api"


def test_worker_commands_are_the_supervisors(
    compose: dict[str, Any], supervised: dict[str, list[str]]
) -> None:
    gpu = _service(compose, "worker")
    assert gpu["command"] == supervised["worker-gpu"]
    assert gpu["command"][:5] == ["celery", "-A", "worker.celery_app", "worker", "-Q"]
    assert gpu["command"][5] == "gpu" and gpu["command"][6:8] == ["-c", "1"]

    validate = _service(compose, "worker-validate")
    assert validate["command"] == _without_embedded_beat(supervised["worker-validate"])
    assert validate["command"][5] == "validate"
    assert "-B" not in validate["command"]  # beat is its own service: exactly one per deployment

    beat = _service(compose, "beat")
    schedule = supervised["worker-validate"][supervised["worker-validate"].index("-s") + 1]
    assert beat["command"][:4] == ["celery", "-A", "worker.celery_app", "beat"]
    assert beat["command"][beat["command"].index("-s") + 1] == schedule
    assert schedule.startswith(DATA + "/")

    for name in ("worker", "worker-validate", "beat"):
        assert _service(compose, name)["build"]["dockerfile"] == "docker/Dockerfile.worker"
        assert _service(compose, name)["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_everything_waits_for_the_bucket(compose: dict[str, Any]) -> None:
    for name in ("api", "worker", "worker-validate", "beat"):
        assert _service(compose, name)["depends_on"]["minio-bucket"] == {
            "condition": "service_completed_successfully"
        }


def test_migrate_is_one_shot(compose: dict[str, Any]) -> None:
    migrate = _service(compose, "migrate")
    assert migrate["command"] == ["stillhouse", "migrate"]
    assert migrate.get("restart", "no") == "no"
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_gpu_reservation(compose: dict[str, Any]) -> None:
    devices = _service(compose, "worker")["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name in ("api", "worker-validate", "beat", "migrate"):
        assert "deploy" not in _service(compose, name)


def test_shared_settings(compose: dict[str, Any]) -> None:
    users = ("migrate", "api", "worker", "worker-validate", "beat")
    for name in users:
        env = _env(_service(compose, name))
        assert env["STILLHOUSE_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["STILLHOUSE_DATABASE_URL"].endswith("@postgres:5432/stillhouse"), name
        assert env["STILLHOUSE_BROKER_URL"] == "redis://:${REDIS_PASSWORD:-stillhouse}@redis:6379/0"
        assert env["STILLHOUSE_DATA_DIR"] == DATA, name
        assert env["STILLHOUSE_STORAGE_URL"].startswith("s3://"), name  # MinIO by default
        assert "http://minio:9000" in env["STILLHOUSE_S3_ENDPOINT_URL"], name
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
    for name in ("api", "worker", "worker-validate", "beat"):
        assert "data:/data" in _service(compose, name)["volumes"], name
    assert "data" in compose["volumes"]


def test_workers_may_make_the_sandboxs_namespaces(compose: dict[str, Any]) -> None:
    for name in ("worker", "worker-validate"):
        options = _service(compose, name)["security_opt"]
        assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(options), name
    worker = (ROOT / "docker" / "Dockerfile.worker").read_text()
    assert "bubblewrap" in worker


def test_dockerfiles() -> None:
    api = (ROOT / "docker" / "Dockerfile.api").read_text()
    worker = (ROOT / "docker" / "Dockerfile.worker").read_text()
    instructions = [line for line in api.splitlines() if not line.lstrip().startswith("#")]
    assert "'.[api]'" in api and not any("torch" in line for line in instructions)
    assert "'.[worker]'" in worker and "TORCH_SPEC" in worker
    for text in (api, worker):
        assert "USER stillhouse" in text
        assert "-c constraints.txt" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".git"} <= set(ignored)
