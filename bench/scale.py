"""Scale: transfer sets bigger than memory, through the real service.

    python -m bench.scale                      # 1, 2 and 4.0 GiB of float32 (about 8 minutes)
    python -m bench.scale --sizes 20000,40000  # any sizes, in samples of 784 float32
    python -m bench.scale --quick              # 2,000 to 8,000 samples: a smoke run
    python -m bench.scale --text               # 0.5, 2 and 5 million sequences of text
    python -m bench.scale --text --quick       # 2,000 to 8,000 sequences: a smoke run

Each transfer set is an ``N × 784`` float32 ``.npy`` written to disk in chunks (never whole
in memory), with a 784-256-10 MLP teacher made here (seeded, exported as ``.pt2``). Each
goes through ``stillhouse run`` as a user would: upload, validation, a one-epoch job with
the default held-out split, the student downloaded. Meanwhile a sampler reads ``RssAnon``
from ``/proc/<pid>/status`` every 0.2 s for every process of the service: anonymous memory
only, so the pages of the memory-mapped set (file-backed, reclaimable) do not count.

Printed per size: N, the file's size, the job's wall time (submit → succeeded) and per
sample, the peak anonymous memory of the job worker's process tree (the Celery ``gpu``
worker, its pool process and the sandboxed engine child) and of the whole service, each
also as growth over the idle service just before the job. Goals (issue "transfer sets
bigger than memory"): the worker tree's peak under 1.5 GiB at every size, and time per
sample flat (largest / smallest ≤ 1.2). The generated files and the service's data folder
are removed at the end.

``--text``: the same through the text path. Each transfer set is N sentences of a small fixed
word list (seeded, 6 to 24 words each, no labels) as JSON Lines written a chunk at a time; the
teacher, made here, is an ONNX text classifier (``input_ids`` and ``attention_mask``, int64,
dynamic batch and sequence axes: an embedding, a masked mean pool, a linear layer) uploaded
with a word-level ``tokenizer.json`` built here with ``tokenizers`` (truncation at
``TEXT_LENGTH``). The job tokenizes the set in the sandboxed worker (streamed, cached as
mapped token arrays) and distils a ``text_cnn`` student for one epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench import _harness as h  # noqa: E402
from bench.service import KEY, Service  # noqa: E402

FEATURES, CLASSES, HIDDEN = 784, 10, 256
GiB = 1024**3
DEFAULT_SIZES = (342_393, 684_785, 1_369_570)  # 1, 2 and 4.0 GiB of float32 rows
QUICK_SIZES = (2_000, 4_000, 8_000)
WRITE_ROWS = 65_536
AUTH = {"Authorization": f"Bearer {KEY}"}
SAMPLE_EVERY_S = 0.2

# --text: N sentences of WORDS through the text path, a text_cnn student.
TEXT_SIZES = (500_000, 2_000_000, 5_000_000)
QUICK_TEXT_SIZES = (2_000, 4_000, 8_000)
TEXT_LENGTH = 32  # the tokenizer's truncation: the job's sequence length
TEXT_EMBED, TEXT_CLASSES = 32, 4
TEXT_WORDS = (6, 24)  # words a sentence, inclusive
LINE_BYTES = 256  # more than a JSON line of TEXT_WORDS[1] words of WORDS (disk and upload cap)
_WORD_LIST = """the a of and to in is was for on that with as by at from it his an were are which
    this be or has had not but its new first one after also their two been they who time year may
    she he other all more than into over most only some such when made used can under could
    river city model house world water light small long early music night field stone road
    signal table image text market garden school letter winter summer station bridge"""
WORDS = tuple(_WORD_LIST.split())


def write_npy(path: Path, rows: int, seed: int) -> Path:
    """An ``rows × 784`` float32 .npy in [0, 1), written a chunk at a time."""
    rng = np.random.default_rng(seed)
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, FEATURES)}
    with open(path, "wb") as file:
        np.lib.format.write_array_header_2_0(file, header)
        for start in range(0, rows, WRITE_ROWS):
            count = min(WRITE_ROWS, rows - start)
            file.write(rng.random((count, FEATURES), dtype=np.float32).tobytes())
    return path


def make_teacher(path: Path) -> int:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    example = (torch.rand(4, FEATURES),)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return sum(p.numel() for p in model.parameters())


def write_jsonl(path: Path, rows: int, seed: int) -> Path:
    """``rows`` sentences of WORDS as JSON Lines ``{"text": ...}``, a chunk at a time."""
    rng = np.random.default_rng(seed)
    low, high = TEXT_WORDS
    words = np.array(WORDS)
    with open(path, "w") as file:
        for start in range(0, rows, WRITE_ROWS):
            count = min(WRITE_ROWS, rows - start)
            lengths = rng.integers(low, high + 1, count)
            picks = words[rng.integers(0, len(WORDS), (count, high))]
            file.writelines(
                '{"text": "' + " ".join(row[:n]) + '"}\n'
                for row, n in zip(picks.tolist(), lengths.tolist(), strict=True)
            )
    return path


class TextTeacher(nn.Module):
    """An embedding, a masked mean pool, a linear layer."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, TEXT_EMBED)
        self.head = nn.Linear(TEXT_EMBED, TEXT_CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)  # type: ignore[no-any-return]


def make_tokenizer(path: Path) -> int:
    """A word-level tokenizer.json of WORDS: [PAD] 0, [UNK] 1, the words from 2; truncation
    at TEXT_LENGTH. Returns the vocabulary's size."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i for i, w in enumerate(WORDS, 2)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_truncation(TEXT_LENGTH)
    tokenizer.save(str(path))
    return len(vocab)


def make_text_teacher(path: Path, vocab: int) -> int:
    """TextTeacher (seeded random weights) as ONNX: int64 ``input_ids`` and
    ``attention_mask`` with dynamic batch and sequence axes, output ``logits``."""
    from engine.export import _quiet_exporter

    torch.manual_seed(0)
    model = TextTeacher(vocab).eval()
    ids = torch.randint(1, vocab, (4, 8))
    mask = torch.ones(4, 8, dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    sequence = torch.export.Dim("sequence", min=2, max=4096)
    axes = {0: batch, 1: sequence}
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes={"input_ids": axes, "attention_mask": axes},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return sum(p.numel() for p in model.parameters())


# --- memory of a process tree, sampled from outside ---------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                kids.setdefault(int(stat[1]), []).append(int(entry.name))
    return kids


def _tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, frontier = [root], [root]
    while frontier:
        for kid in kids.get(frontier.pop(), []):
            out.append(kid)
            frontier.append(kid)
    return out


def _rss_anon_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def gpu_worker(root: int) -> int:
    """The Celery worker of the ``gpu`` queue under the service (it runs the jobs)."""
    kids = _children()
    for pid in _tree(root, kids):
        argv = _cmdline(pid).split()
        if "celery" in " ".join(argv) and "-Q" in argv and argv[argv.index("-Q") + 1] == "gpu":
            return pid
    raise RuntimeError("no gpu worker found under the service")


@dataclass
class Peak:
    worker_kb: int = 0  # the gpu worker's tree (pool process and sandbox children included)
    service_kb: int = 0  # every process of the service
    samples: int = 0
    worker_stage: str = ""  # the job's stage when the worker tree peaked ("" before any)


class Sampler:
    """Samples RssAnon of two process trees every ``SAMPLE_EVERY_S`` in a thread."""

    def __init__(self, service_root: int, worker_root: int) -> None:
        self.roots = (service_root, worker_root)
        self.peak = Peak()
        self.job_url = ""  # set once the job exists: its stage is read once a second
        self._stage = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> tuple[int, int]:
        kids = _children()
        service, worker = (sum(_rss_anon_kb(p) for p in _tree(r, kids)) for r in self.roots)
        return worker, service

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.job_url and self.peak.samples % 5 == 0:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = httpx.get(self.job_url, headers=AUTH, timeout=2).json()
                    self._stage = answer.get("stage") or "start"
            worker, service = self.now()
            if worker > self.peak.worker_kb:
                self.peak.worker_stage = self._stage
            self.peak.worker_kb = max(self.peak.worker_kb, worker)
            self.peak.service_kb = max(self.peak.service_kb, service)
            self.peak.samples += 1
            self._stop.wait(SAMPLE_EVERY_S)

    @contextlib.contextmanager
    def running(self) -> Iterator[Peak]:
        self._thread.start()
        try:
            yield self.peak
        finally:
            self._stop.set()
            self._thread.join()


# --- the benchmark ------------------------------------------------------------------------


@dataclass
class Row:
    samples: int
    file_bytes: int
    upload_s: float
    job_s: float
    stages: dict[str, float]
    idle: tuple[int, int]  # (worker, service) kB just before the job
    peak: Peak
    agreement: float


def one_size(
    svc: Service, folder: Path, teacher_id: str, rows: int, args: argparse.Namespace
) -> Row:
    if args.text:
        path = write_jsonl(folder / f"transfer-{rows}.jsonl", rows, seed=rows)
    else:
        path = write_npy(folder / f"transfer-{rows}.npy", rows, seed=rows)
    size = path.stat().st_size
    started = time.perf_counter()
    dataset_id = svc.upload("datasets", path)
    upload_s = time.perf_counter() - started
    path.unlink()  # the service keeps its own copy
    assert svc.proc is not None
    sampler = Sampler(svc.proc.pid, gpu_worker(svc.proc.pid))
    idle = sampler.now()
    spec = {
        "teacher_ids": [teacher_id],
        "dataset_id": dataset_id,
        "training": {"epochs": 1, "batch_size": args.batch_size},
    }
    if args.text:
        spec["student"] = {"architecture": "text_cnn"}
    with sampler.running() as peak:
        started = time.perf_counter()
        job_id = svc.submit(spec)
        sampler.job_url = f"{svc.url}/v1/jobs/{job_id}"
        report, _ = svc.finish(job_id, folder / "students")
        job_s = time.perf_counter() - started
    return Row(
        rows, size, upload_s, job_s, report["timings_s"], idle, peak, report["agreement_top1"]
    )


def _mib(kb: int) -> str:
    return f"{kb / 1024:,.0f}"


def table(rows: list[Row], text: bool = False) -> str:
    header = [
        "N",
        "file MiB" if text else "file GiB",
        "job s",
        "µs / sample",
        "stages s (soft labels / train / eval / export)",
        "worker tree peak MiB (growth)",
        "service peak MiB (growth)",
        "samples",
    ]
    body = []
    for r in rows:
        stages = " / ".join(
            f"{r.stages.get(k, 0):.1f}"
            for k in ("soft_labeling", "training", "evaluating", "exporting")
        )
        body.append(
            [
                f"{r.samples:,}",
                f"{r.file_bytes / 1024**2:,.1f}" if text else f"{r.file_bytes / GiB:.2f}",
                f"{r.job_s:.1f}",
                f"{1e6 * r.job_s / r.samples:.1f}",
                stages,
                f"{_mib(r.peak.worker_kb)} (+{_mib(r.peak.worker_kb - r.idle[0])})",
                f"{_mib(r.peak.service_kb)} (+{_mib(r.peak.service_kb - r.idle[1])})",
                str(r.peak.samples),
            ]
        )
    return h.markdown_table(header, body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", help=f"default {DEFAULT_SIZES}; with --text {TEXT_SIZES}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sizes {QUICK_SIZES} (with --text {QUICK_TEXT_SIZES}): a smoke run",
    )
    parser.add_argument(
        "--text", action="store_true", help="JSON Lines sentences, an ONNX text teacher, text_cnn"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the job (1: a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=h.OUT, help="where scale.md and the data go")
    args = parser.parse_args(argv)
    args.folder = args.out / "scale"
    if args.quick:
        sizes = list(QUICK_TEXT_SIZES if args.text else QUICK_SIZES)
    elif args.sizes:
        sizes = sorted(int(s) for s in args.sizes.split(","))
    else:
        sizes = list(TEXT_SIZES if args.text else DEFAULT_SIZES)
    # A text set's service copy and its token cache (three int64 arrays) stay until the end.
    row_bytes = 2 * LINE_BYTES + 3 * 8 * TEXT_LENGTH if args.text else 2 * FEATURES * 4
    need = sum(s * row_bytes for s in sizes) + GiB
    args.folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.folder).free
    if free < need:
        print(f"not enough disk: {free / GiB:.1f} GiB free, about {need / GiB:.1f} GiB needed")
        return 1
    out = h.Transcript()
    out(f"# Scale: {h.machine()}; load average {h.load_average()}")
    file_bytes = LINE_BYTES if args.text else FEATURES * 4
    os.environ["STILLHOUSE_MAX_UPLOAD_BYTES"] = str(2 * max(sizes) * file_bytes)
    started = time.perf_counter()
    try:
        with Service(args.folder, threads=args.threads, shared=False) as svc:
            if args.text:
                tokenizer = args.folder / "tokenizer.json"
                vocab = make_tokenizer(tokenizer)
                teacher = args.folder / "teacher.onnx"
                params = make_text_teacher(teacher, vocab)
                out(
                    f"teacher: ONNX text classifier (embedding {vocab}x{TEXT_EMBED}, mean pool, "
                    f"linear to {TEXT_CLASSES}), {params:,} parameters; word-level tokenizer, "
                    f"truncation at {TEXT_LENGTH}; student text_cnn"
                )
                teacher_id = svc.upload("teachers", teacher, tokenizer=tokenizer)
            else:
                teacher = args.folder / "teacher.pt2"
                params = make_teacher(teacher)
                out(f"teacher: 784-{HIDDEN}-10 MLP, {params:,} parameters")
                teacher_id = svc.upload("teachers", teacher)
            out(
                f"1 epoch, batch {args.batch_size}, default held-out split, ONNX export, "
                f"{args.threads} torch thread(s)"
            )
            rows = []
            for n in sizes:
                rows.append(one_size(svc, args.folder, teacher_id, n, args))
                r = rows[-1]
                out(
                    f"N={n:,}: job {r.job_s:.1f} s, worker peak {_mib(r.peak.worker_kb)} MiB "
                    f"(stage {r.peak.worker_stage or '?'}), "
                    f"upload {r.upload_s:.1f} s, agreement {r.agreement:.3f}"
                )
    finally:  # the generated sets and the service's copies; service.log stays
        shutil.rmtree(args.folder / "var", ignore_errors=True)
        shutil.rmtree(args.folder / "students", ignore_errors=True)
        for path in [*args.folder.glob("*.npy"), *args.folder.glob("*.jsonl")]:
            path.unlink()
    out()
    out(table(rows, args.text))
    per = [r.job_s / r.samples for r in rows]
    worst = max(r.peak.worker_kb for r in rows) / 1024
    out(
        f"\ntime per sample, largest / smallest: {per[-1] / per[0]:.2f} (goal ≤ 1.2); "
        f"worker tree peak at most {worst:,.0f} MiB (goal < 1,536)"
    )
    out(f"bench wall time {time.perf_counter() - started:.0f} s; load average {h.load_average()}")
    out.save(args.out / ("scale_text.md" if args.text else "scale.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
