"""What the CLI says when something is wrong: one line and a hint, never a traceback
(unless --debug); help text on every command and option."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperArgument, TyperOption

from tests.cli.conftest import cli_env, stillhouse


def _error_lines(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    return lines


@pytest.fixture
def refused_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_server_down_is_one_line_with_a_hint(refused_url: str) -> None:
    proc = stillhouse("jobs", "list", env=cli_env(refused_url))
    assert proc.returncode == 1
    error, hint = _error_lines(proc.stderr)
    assert f"cannot reach {refused_url}/v1/jobs" in error and "refused" in error.lower()
    assert "STILLHOUSE_URL" in hint


def test_debug_shows_the_traceback(refused_url: str) -> None:
    proc = stillhouse("--debug", "jobs", "list", env=cli_env(refused_url))
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConnectError" in proc.stderr


def test_missing_file_is_one_line(tmp_path: Path, refused_url: str) -> None:
    proc = stillhouse("teachers", "upload", str(tmp_path / "nope.pt2"), env=cli_env(refused_url))
    assert proc.returncode == 1
    error, _ = _error_lines(proc.stderr)
    assert error == f"error: no such file: {tmp_path / 'nope.pt2'}"


def test_missing_key_says_where_to_get_one(refused_url: str) -> None:
    proc = stillhouse("jobs", "list", env=cli_env(refused_url, key=None))
    assert proc.returncode == 2
    assert "STILLHOUSE_API_KEY" in _error_lines(proc.stderr)[1]


def test_problem_detail_from_the_api_is_shown(api_url: str) -> None:
    proc = stillhouse("jobs", "show", "job_doesnotexist", env=cli_env(api_url))
    assert proc.returncode == 1
    error, hint = _error_lines(proc.stderr)
    assert error == "error: 404 Not found: no job 'job_doesnotexist'"
    assert "list" in hint

    proc = stillhouse("jobs", "list", env=cli_env(api_url, key="sh_wrong"))
    assert "401" in _error_lines(proc.stderr)[0]


def test_keys_create_without_the_servers_data_dir_is_one_line(tmp_path: Path) -> None:
    proc = stillhouse("keys", "create", "--tenant", "t", env=cli_env(), cwd=tmp_path)
    assert proc.returncode == 1
    error, hint = _error_lines(proc.stderr)
    assert error == f"error: no Stillhouse database at {tmp_path / 'var' / 'stillhouse.db'}"
    assert "STILLHOUSE_DATA_DIR" in hint
    assert list(tmp_path.iterdir()) == []  # no empty database left behind


def test_keys_create_on_an_unmigrated_database_is_one_line(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "other.db").close()
    env = cli_env(STILLHOUSE_DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}")
    proc = stillhouse("keys", "create", "--tenant", "t", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    error, _ = _error_lines(proc.stderr)
    assert "no such table: tenants" in error


def _commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")


def test_every_command_and_option_has_help() -> None:
    from stillhouse.cli import app

    root = typer.main.get_command(app)
    missing = []
    for path, command in _commands(root):
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if isinstance(param, TyperOption | TyperArgument) and not param.help:
                missing.append(f"{path} {param.name}")
    assert len(list(_commands(root))) >= 20
    assert missing == []
