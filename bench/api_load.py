"""The API under load, on Postgres + Redis with a gpu worker training a job.

    python -m bench.api_load            # 2 GiB upload, 64 clients for 15 s (about 3 minutes)
    python -m bench.api_load --quick    # 20 MB upload, 16 clients for 2 s: what `make test` runs

1. Upload: a real (non-sparse) 2 GiB teacher archive, sent by curl (its own process, over
   127.0.0.1) to ``POST /v1/teachers``; the server parses, hashes, writes and fsyncs it.
   Against, in the same round: ``cp`` of the same file on the same disk, plus fsync, and
   the same curl command to a bare drain (bench/_bare_app.py: the body read and dropped by
   a server configured like the API). Three rounds, each a copy, a drain and an upload (the
   disk's speed drifts with the page cache's write-back; medians are compared). The API's
   RSS is sampled from /proc every 20 ms. Goals: ≥ 90 % of the drain's speed, ≥ 50 % of
   copy speed, RSS growth ≤ 100 MB.
2. Reads: ``GET /v1/jobs/{id}`` of the job being trained, from wrk with 64 connections
   (its own process), against a bare Starlette endpoint doing the same single-row SELECT
   through the same engine and pool (bench/_bare_app.py), served the same way (both by
   ``api.serve``'s configuration, as ``make run`` serves the API). Interleaved rounds.
   Goals: ≥ 90 % of the bare throughput, p99 ≤ 50 ms.

Every server listens on 127.0.0.1 only; the database is a fresh one, dropped at the end;
the big files are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from bench import _harness as h  # noqa: E402
from stillhouse.client import Client  # noqa: E402

BLOCK = 16 * 1024 * 1024


def write_big_teacher(path: Path, size: int) -> None:
    """A .pt2-shaped ZIP (what the upload sniffer accepts as torch.export) of ``size``
    bytes of real data: random blocks, each one made distinct, so nothing is sparse."""
    block = bytearray(os.urandom(BLOCK))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("teacher/archive_format", "pt2")
        zf.writestr("teacher/models/model.json", "{}")
        with zf.open("teacher/data/weights/weight_0", "w", force_zip64=True) as out:
            left, i = size, 0
            while left > 0:
                block[:8] = i.to_bytes(8, "little")
                n = min(left, BLOCK)
                out.write(block[:n])
                left, i = left - n, i + 1
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def copy_seconds(src: Path, dst: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - started


class RssSampler:
    """VmRSS of ``pid`` every 20 ms in a thread, until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb = pid, 0
        self.before_kb = h.memory_kb(pid).get("VmRSS", 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, h.memory_kb(self.pid).get("VmRSS", 0))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _curl_form(url: str, path: Path) -> tuple[float, str]:
    """POST ``path`` as the multipart ``file`` part; the seconds and the answer's body."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            "curl", "-sS", "--max-time", "600", "-o", "-", "-w", "\n%{http_code}",
            "-H", f"Authorization: Bearer {h.KEY}", "-F", f"file=@{path}", url,
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    body, _, status = done.stdout.rpartition("\n")
    assert status == "201", f"{url} answered {status}: {body[:300]}"
    return seconds, body


def drain_seconds(url: str, path: Path) -> float:
    """The same upload to the bare drain: the floor of receiving it."""
    seconds, body = _curl_form(f"{url}/bare/drain", path)
    assert json.loads(body)["bytes"] > path.stat().st_size, body
    return seconds


def upload(url: str, path: Path, api_pid: int) -> dict[str, Any]:
    sampler = RssSampler(api_pid)
    seconds, body = _curl_form(f"{url}/v1/teachers", path)
    sampler.stop()
    return {
        "seconds": seconds,
        "teacher": json.loads(body),
        "rss_before_mb": sampler.before_kb / 1024,
        "rss_peak_mb": sampler.peak_kb / 1024,
    }


def wrk(url: str, connections: int, seconds: int, auth: bool) -> dict[str, float]:
    argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if auth:
        argv += ["-H", f"Authorization: Bearer {h.KEY}"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert bad is None, f"wrk saw errors:\n{out}"
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {
        q: _ms(m.group(1))
        for q in ("50", "99")
        if (m := re.search(rf"^\s+{q}%\s+([\d.]+\w+)", out, re.MULTILINE))
    }
    return {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"]}


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 404
    except httpx.HTTPError:
        return False


def training_job(client: Client, folder: Path) -> str:
    """A long job on a small synthetic set, so that the worker trains during the reads."""
    import numpy as np

    from bench.speed import make_teacher

    make_teacher(folder / "teacher.pt2")
    rng = np.random.default_rng(0)
    np.save(folder / "transfer.npy", rng.random((2000, 784), dtype=np.float32))
    teacher = client.wait_ready("teachers", client.upload_teacher(folder / "teacher.pt2")["id"])
    data = client.wait_ready("datasets", client.upload_dataset(folder / "transfer.npy")["id"])
    assert teacher["status"] == data["status"] == "ready", (teacher, data)
    job = client.submit(
        {
            "teacher_ids": [teacher["id"]],
            "dataset_id": data["id"],
            "training": {"epochs": 1000, "batch_size": 32},
        }
    )
    h.wait_for(lambda: client.job(job["id"])["stage"] == "training", timeout=300, interval=0.5)
    return str(job["id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 MB, 16 clients, 2 s")
    parser.add_argument("--upload-mib", type=int, default=2048)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=15, help="per wrk run (two rounds)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the gpu worker")
    parser.add_argument("--out", type=Path, default=h.OUT / "api_load")
    args = parser.parse_args(argv)
    out = h.Transcript()

    if args.quick:
        args.upload_mib, args.clients, args.seconds = 20, 16, 2
    args.out.mkdir(parents=True, exist_ok=True)
    rounds = 1 if args.quick else 3
    free_gib = shutil.disk_usage(args.out).free / 1024**3
    need_gib = (rounds + 2.5) * args.upload_mib / 1024 + 1
    assert free_gib > need_gib, f"only {free_gib:.1f} GiB free, need {need_gib:.1f}"

    load_before = h.load_average()
    data_dir = args.out / f"var-{int(time.time())}"
    big, copied = args.out / "big-teacher.pt2", args.out / "big-teacher-copy.pt2"
    api_port, bare_port = h.free_port(), h.free_port()
    celery = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-c", "1"]
    try:
        write_big_teacher(big, args.upload_mib * 1024 * 1024)
        size = big.stat().st_size
        with h.fresh_postgres() as db_url:
            env = h.service_env(data_dir, api_port, h.redis_env(db_url))
            env["STILLHOUSE_TORCH_THREADS"] = str(args.threads)
            h.migrate(env)
            argvs = [
                [
                    sys.executable,
                    "-m",
                    "api.serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(api_port),
                    "--log-level",
                    "warning",
                ],
                [sys.executable, "-m", "bench._bare_app", "--port", str(bare_port)],
                [*celery, "-Q", "gpu", "-n", "gpu@%h"],
                [*celery, "-Q", "validate", "-n", "validate@%h"],
            ]
            ready = f"http://127.0.0.1:{api_port}/readyz"
            with h.processes(argvs, env, data_dir / "service.log", ready) as procs:
                h.wait_for(lambda: _answers(f"http://127.0.0.1:{bare_port}/bare/jobs/none"), 60)
                api = f"http://127.0.0.1:{api_port}"
                bare_url = f"http://127.0.0.1:{bare_port}"
                copies, drains, ups = [], [], []
                with Client(api, h.KEY, timeout=600) as client:
                    for _ in range(rounds):
                        copies.append(copy_seconds(big, copied))
                        copied.unlink()
                        drains.append(drain_seconds(bare_url, big))
                        ups.append(upload(api, big, procs[0].pid))
                        # its validation (a worker reads the file) ends before the next round
                        client.wait_ready(
                            "teachers", ups[-1]["teacher"]["id"], timeout=600, check=False
                        )
                    big.unlink()
                    job_id = training_job(client, args.out)
                    reads: dict[str, list[dict[str, float]]] = {"api": [], "bare": []}
                    for _ in range(1 if args.quick else 2):  # interleaved: drift shows
                        reads["api"].append(
                            wrk(f"{api}/v1/jobs/{job_id}", args.clients, args.seconds, True)
                        )
                        bare = f"{bare_url}/bare/jobs/{job_id}"
                        reads["bare"].append(wrk(bare, args.clients, args.seconds, False))
                    still = client.job(job_id)
                    assert still["status"] == "running", still["status"]
                    client.cancel(job_id)
    finally:
        for path in (big, copied):
            path.unlink(missing_ok=True)
        shutil.rmtree(data_dir / "files", ignore_errors=True)
    load_after = h.load_average()

    mib = size / 1024**2
    cp_s = statistics.median(copies)
    drain_s = statistics.median(drains)
    up_s = statistics.median(u["seconds"] for u in ups)
    cp_speed, up_speed = mib / cp_s, mib / up_s
    rss_before = min(u["rss_before_mb"] for u in ups)
    rss_peak = max(u["rss_peak_mb"] for u in ups)
    growth = rss_peak - rss_before
    out(f"\nAPI under load: Postgres + Redis, a gpu worker training job {job_id} meanwhile")
    given = " ".join(sys.argv[1:] if argv is None else argv)
    command = f".venv/bin/python -m bench.api_load {given}".rstrip()
    out(f"command: `{command}`")
    out(f"machine: {h.machine()}; load average before {load_before}, after {load_after}\n")
    upload_rows = []
    for i, (c, d, u) in enumerate(zip(copies, drains, ups, strict=True), 1):
        upload_rows += [
            [
                f"cp + fsync, same disk ({i})",
                f"{mib:.0f}",
                f"{c:.2f}",
                f"{mib / c:.0f}",
                "",
                "",
                "",
            ],
            [f"bare drain, curl ({i})", f"{mib:.0f}", f"{d:.2f}", f"{mib / d:.0f}", "", "", ""],
            [
                f"POST /v1/teachers, curl ({i})",
                f"{mib:.0f}",
                f"{u['seconds']:.2f}",
                f"{mib / u['seconds']:.0f}",
                f"{c / u['seconds']:.2f}",
                f"{d / u['seconds']:.2f}",
                f"{u['rss_before_mb']:.0f} → {u['rss_peak_mb']:.0f}",
            ],
        ]
    upload_rows.append(
        [
            "**median upload vs medians of cp, drain**", f"{mib:.0f}", "", "",
            f"**{cp_s / up_s:.2f}**", f"**{drain_s / up_s:.2f}**", "",
        ]
    )  # fmt: skip
    out(
        h.markdown_table(
            [
                "upload (round)", "MiB", "seconds", "MiB/s", "vs cp", "vs drain",
                "API RSS before → peak (MB)",
            ],
            upload_rows,
        )
    )  # fmt: skip
    out(f"\nupload: {drain_s / up_s:.0%} of the bare drain's speed (goal ≥ 90 %), "
        f"{up_speed / cp_speed:.0%} of copy speed (medians of {rounds}; goal ≥ 50 %), "
        f"RSS growth {growth:.0f} MB (goal ≤ 100 MB)\n")  # fmt: skip
    rows = []
    for name, label in (("api", "GET /v1/jobs/{id}"), ("bare", "bare Starlette, same SELECT")):
        for i, r in enumerate(reads[name], 1):
            rows.append(
                [label, str(i), f"{r['rps']:.0f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}"]
            )
    out(h.markdown_table(["reads, 64 clients" if args.clients == 64 else
                            f"reads, {args.clients} clients", "round", "req/s", "p50 ms", "p99 ms"],
                           rows))  # fmt: skip
    api_rps = sum(r["rps"] for r in reads["api"])
    bare_rps = sum(r["rps"] for r in reads["bare"])
    worst_p99 = max(r["p99_ms"] for r in reads["api"])
    out(f"\nreads: {api_rps / bare_rps:.0%} of the bare throughput (goal ≥ 90 %), "
          f"p99 {worst_p99:.1f} ms (goal ≤ 50 ms)")  # fmt: skip
    summary = {
        "upload": {"rounds": ups, "cp_seconds": copies, "drain_seconds": drains, "bytes": size},
        "reads": reads,
    }
    (args.out / "api_load.json").write_text(json.dumps(summary, indent=1, default=str))
    out.save(args.out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
