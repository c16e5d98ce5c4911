"""The `stillhouse` client commands against a real API, worker and database, run as a user
runs them (a subprocess): progress bars, ids-only output, JSON and tables, pages."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import cli_env, empty_tenant_data, stillhouse
from tests.factories import digits, npz_bytes, teacher_pt2_bytes

# Workers start (torch imports) and a job runs inside these tests: slow on a busy host, and
# not in the fast lane.
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-files")
    x, _, xe, ye = digits()
    paths = {"teacher": folder / "t.pt2", "transfer": folder / "x.npz", "eval": folder / "e.npz"}
    paths["teacher"].write_bytes(teacher_pt2_bytes())
    paths["transfer"].write_bytes(npz_bytes(x))
    paths["eval"].write_bytes(npz_bytes(xe, ye))
    return paths


@pytest.fixture(scope="module")
def uploads(
    api_url: str, worker_process: object, files: dict[str, Path]
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """The three uploads, done once through the CLI (asserted by the tests that need them)."""
    env = cli_env(api_url)
    yield {
        "teacher": stillhouse("teachers", "upload", str(files["teacher"]), "-o", "json", env=env),
        "transfer": stillhouse("datasets", "upload", str(files["transfer"]), "-o", "json", env=env),
        "eval": stillhouse("datasets", "upload", str(files["eval"]), "-q", env=env),
    }
    empty_tenant_data()


def _ids(uploads: dict[str, subprocess.CompletedProcess[str]]) -> dict[str, str]:
    out = {}
    for name, proc in uploads.items():
        assert proc.returncode == 0, proc.stderr
        out[name] = proc.stdout.strip() if name == "eval" else json.loads(proc.stdout)["id"]
    return out


def test_upload_shows_a_bytes_bar_and_prints_the_validated_teacher(
    uploads: dict[str, subprocess.CompletedProcess[str]], files: dict[str, Path]
) -> None:
    proc = uploads["teacher"]
    assert proc.returncode == 0, proc.stderr
    teacher = json.loads(proc.stdout)
    assert teacher["status"] == "ready" and teacher["format"] == "torch_export"
    assert teacher["size_bytes"] == files["teacher"].stat().st_size
    bar = proc.stderr
    assert "upload t.pt2" in bar
    assert f"{files['teacher'].stat().st_size / 1000:.1f} kB" in bar  # bytes sent / total


def test_quiet_upload_prints_the_id_alone(
    uploads: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    proc = uploads["eval"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("ds_") and len(proc.stdout.split()) == 1
    assert proc.stderr == ""  # -q: no progress either


def test_lists_page_with_cursor_and_all(
    api_url: str, uploads: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    ids = _ids(uploads)
    env = cli_env(api_url)
    first = stillhouse("datasets", "list", "--limit", "1", "-o", "json", env=env)
    page: dict[str, Any] = json.loads(first.stdout)
    assert [d["id"] for d in page["items"]] == [ids["eval"]]  # newest first
    assert page["next_cursor"]
    second = stillhouse(
        "datasets", "list", "--limit", "1", "--cursor", page["next_cursor"], "-o", "json", env=env
    )
    assert [d["id"] for d in json.loads(second.stdout)["items"]] == [ids["transfer"]]
    every = stillhouse("datasets", "list", "--limit", "1", "--all", "-q", env=env)
    assert every.stdout.split() == [ids["eval"], ids["transfer"]]


def test_table_output_has_a_header_and_a_row_per_item(
    api_url: str, uploads: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    ids = _ids(uploads)
    proc = stillhouse("teachers", "list", "-o", "table", env=cli_env(api_url))
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "name", "format", "status"]
    assert ids["teacher"] in lines[1] and "ready" in lines[1]


def test_submit_wait_shows_epoch_loss_and_agreement_then_the_job(
    api_url: str, uploads: dict[str, subprocess.CompletedProcess[str]], gpu_worker: object
) -> None:
    ids = _ids(uploads)
    env = cli_env(api_url)
    args = ["--teacher", ids["teacher"], "--dataset", ids["transfer"]]
    args += ["--eval-dataset", ids["eval"], "--epochs", "2"]
    proc = stillhouse("jobs", "submit", *args, "--wait", "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["status"] == "succeeded"
    bar = proc.stderr
    assert "epoch 2/2" in bar and "loss " in bar and "agreement " in bar and "ETA" in bar
    assert "100%" in bar

    again = stillhouse("jobs", "wait", job["id"], "-q", env=env)
    assert (again.returncode, again.stdout.strip(), again.stderr) == (0, job["id"], "")
    report = stillhouse("jobs", "report", job["id"], "-o", "table", env=env)
    assert "teacher" in report.stdout and "compression" in report.stdout
