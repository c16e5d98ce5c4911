"""``make bench``: run every benchmark, i.e. every ``bench/*.py`` that defines ``main(argv)``.

Modules are found by listing the folder, so a new benchmark needs no edit here. Helpers
(no ``main``) are skipped; so are GPU-only checks when there is no CUDA. Extra arguments are
passed to every benchmark (e.g. ``python -m bench.run_all --quick``); ``--only NAME`` runs
the named ones. Exits non-zero when any benchmark failed, after running the rest.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH = Path(__file__).resolve().parent
GPU_ONLY = {"gpu_check"}  # defaults to --device cuda; `make test` runs it on CPU instead


def defines_main(path: Path) -> bool:
    """Whether the file defines a top-level ``main`` (read without importing it)."""
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


def discover() -> list[str]:
    names = []
    for path in sorted(BENCH.glob("*.py")):
        if path.stem.startswith("_") or path.stem == "run_all" or not defines_main(path):
            continue
        names.append(path.stem)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark")
    args, rest = parser.parse_known_args(argv)
    import torch

    failed = []
    for name in discover():
        if args.only and name not in args.only:
            continue
        if name in GPU_ONLY and not torch.cuda.is_available():
            print(f"== bench.{name}: skipped (needs CUDA)", flush=True)
            continue
        print(f"== bench.{name} {' '.join(rest)}", flush=True)
        started = time.perf_counter()
        try:
            code = importlib.import_module(f"bench.{name}").main(list(rest))
        except Exception:  # noqa: BLE001 - report it and run the others
            traceback.print_exc()
            code = 1
        print(f"== bench.{name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
