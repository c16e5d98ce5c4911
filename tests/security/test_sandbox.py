"""`stillhouse sandbox-exec -- CMD` runs CMD in the sandbox of jobs and upload validation:
probes run inside it prove what it keeps out (network, other processes, the data directory,
writes outside the job folder, memory)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import DATA_DIR, REDIS_URL, ROOT
from worker.bwrap import SANDBOX_UID, UIDS

SECRET = "postgresql+psycopg://stillhouse:s3cret-in-the-parent@127.0.0.1:5432/stillhouse"


def sandbox_exec(code: str, *args: str, memory_bytes: int = 0) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` inside the sandbox through the CLI, as an operator would."""
    argv = [sys.executable, "-m", "stillhouse.cli", "sandbox-exec"]
    if memory_bytes:
        argv += ["--memory-bytes", str(memory_bytes)]
    argv += ["--", sys.executable, "-c", textwrap.dedent(code), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STILLHOUSE_DATABASE_URL": SECRET}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
except OSError as exc:
    print("refused", exc.errno)
else:
    print("connected")
"""


@pytest.mark.parametrize(
    "address",
    [("127.0.0.1", 5432), (urlsplit(REDIS_URL).hostname, urlsplit(REDIS_URL).port or 6379)],
    ids=["postgres", "redis"],
)
def test_no_network_reaches_postgres_or_redis(address: tuple[str, int]) -> None:
    host, port = address
    assert connects(host, port), "the server must be reachable from outside for this test"
    done = sandbox_exec(CONNECT, host, str(port))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused"), done.stdout


def test_proc_1_is_the_sandboxs_own_init_and_no_host_process_is_visible() -> None:
    host_init = Path("/proc/1/cmdline").read_bytes()
    done = sandbox_exec(
        """
        import os, sys
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        print(repr(open("/proc/1/cmdline", "rb").read()))
        print(pids)
        print(os.path.exists(f"/proc/{sys.argv[1]}"))
        """,
        str(os.getpid()),
    )
    assert done.returncode == 0, done.stderr
    init, pids, ours_visible = done.stdout.splitlines()
    assert init != repr(host_init)
    assert b"-c" in eval(init)  # the sandboxed command itself is pid 1 in there
    assert len(eval(pids)) <= 2 and ours_visible == "False"


def test_the_parents_environment_is_unreadable() -> None:
    done = sandbox_exec(
        """
        import os
        found = []
        for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
            try:
                found.append(open(f"/proc/{pid}/environ", "rb").read())
            except OSError:
                pass
        secret = (b"s3cret", b"DATABASE_URL", b"BROKER_URL", b"API_KEY", b"PG_URL")
        print(len(found) > 1, any(s in blob for blob in found for s in secret))
        print(sorted(k for k in os.environ if "URL" in k or "KEY" in k))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True False", "[]"]


def test_only_the_job_folder_is_writable() -> None:
    targets = ["/etc/probe", "/usr/probe", "/probe", "/dev/probe", "/proc/probe"]
    targets += [f"{sys.prefix}/probe", f"{sys.base_prefix}/probe", f"{ROOT}/worker/probe"]
    done = sandbox_exec(
        """
        import os, sys
        for path in sys.argv[1:]:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError:
                print("refused", path)
        open("/job/probe", "w").write("x")  # the job folder is the working directory
        print(os.getcwd(), os.geteuid())
        """,
        *targets,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:-1] == [f"refused {path}" for path in targets]
    cwd, uid = lines[-1].split()
    # An unprivileged user: a root worker's sandbox has a host uid of its own.
    assert cwd == "/job" and int(uid) in (UIDS if os.geteuid() == 0 else [SANDBOX_UID])
    assert not Path(ROOT / "worker" / "probe").exists()


def test_other_tenants_files_and_the_database_are_not_visible() -> None:
    upload = DATA_DIR / "files" / "teachers" / "ab" / "another-tenants-teacher"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"secret weights")
    (DATA_DIR / "stillhouse.db").write_bytes(b"SQLite format 3\0")
    done = sandbox_exec(
        """
        import os, sys
        print([os.path.exists(p) for p in sys.argv[1:]])
        print(sorted(os.listdir("/job")))
        """,
        str(upload),
        str(upload.parent.parent),
        str(DATA_DIR / "stillhouse.db"),
        str(DATA_DIR),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[False, False, False, False]", "['inputs', 'tmp']"]


def test_the_memory_limit_stops_an_allocation_bomb() -> None:
    done = sandbox_exec(
        """
        chunks = []
        for _ in range(64):  # 4 GiB in 64 MiB pieces, each touched
            chunks.append(bytearray(b"x") * (64 << 20))
        print("allocated 4 GiB")
        """,
        memory_bytes=512 << 20,
    )
    assert done.returncode != 0
    assert "MemoryError" in done.stderr and "allocated" not in done.stdout


def test_limits_and_no_new_privs_hold_inside() -> None:
    done = sandbox_exec(
        """
        import resource
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(status["NoNewPrivs"].strip(), status["CapEff"].strip())
        print(resource.getrlimit(resource.RLIMIT_NPROC)[0] > 0,
              resource.getrlimit(resource.RLIMIT_FSIZE)[0] > 0,
              resource.getrlimit(resource.RLIMIT_CPU)[0] > 0)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1 0000000000000000", "True True True"]


def test_the_exit_status_is_the_commands() -> None:
    assert sandbox_exec("raise SystemExit(7)").returncode == 7


def _without_bwrap(tmp_path: Path) -> dict[str, str]:
    """PATH with the tools a command needs but no bwrap: a host that cannot sandbox."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("setpriv", "true"):
        (bin_dir / tool).symlink_to(f"/usr/bin/{tool}")
    return {**os.environ, "PYTHONPATH": str(ROOT), "PATH": str(bin_dir)}


def test_without_a_sandbox_nothing_runs_unless_the_operator_opts_out(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = [sys.executable, "-m", "stillhouse.cli", "sandbox-exec", "--"]
    argv += [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    env = _without_bwrap(tmp_path)
    refused = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 125 and not marker.exists()
    assert "STILLHOUSE_SANDBOX=none" in refused.stderr
    env["STILLHOUSE_SANDBOX"] = "none"
    opted_out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert opted_out.returncode == 0 and marker.exists()
    assert "WITHOUT a sandbox" in opted_out.stderr
