"""A file of any size is validated under the validation's memory cap: the cap counts what
the validation allocates (RLIMIT_DATA), not the map of the file, which is no memory it uses.

The upload is a sparse .npy: its header and a hole, so it costs no disk to make (the API
still stores every byte of it).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import DATA_DIR, DEV_KEY, wait_for
from tests.security.servers import ApiServer

GiB = 1024**3
SAMPLES, FEATURES = 1_500_000, 784  # MNIST's 28x28 as float32: 4.4 GiB


def sparse_npy(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """A valid .npy of zeros without its data on disk: the header, then a hole."""
    with open(path, "wb") as file:
        header = {"descr": dtype, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(file, header)
        file.truncate(file.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return path


@pytest.mark.slow  # streams 4.4 GiB through the API and its hash
def test_a_sparse_4_gib_npy_uploaded_through_the_api_is_ready(
    worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    path = sparse_npy(tmp_path / "big.npy", (SAMPLES, FEATURES))
    size = path.stat().st_size
    assert size > 2 * 2 * GiB  # twice the default validation cap (2 GiB)
    api = ApiServer({"STILLHOUSE_MAX_UPLOAD_BYTES": str(8 * GiB)}, DATA_DIR / "api-big.log")
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    try:
        with httpx.Client(base_url=api.url, headers=headers, timeout=600, trust_env=False) as http:
            started = time.monotonic()
            with open(path, "rb") as file:
                resp = http.post("/v1/datasets", files={"file": ("big.npy", file)})
            assert resp.status_code == 201, resp.text
            uploaded = time.monotonic()

            def settled() -> dict[str, object] | None:
                obj = dict(http.get(f"/v1/datasets/{resp.json()['id']}").json())
                return obj if obj["status"] != "validating" else None

            dataset = wait_for(settled, timeout=300, interval=0.5)
            print(
                f"{size / GiB:.2f} GiB: upload {uploaded - started:.1f} s, "
                f"validation {time.monotonic() - uploaded:.1f} s"
            )
            http.delete(f"/v1/datasets/{dataset['id']}")  # its 4.4 GiB stored copy
    finally:
        api.stop()
    assert dataset["status"] == "ready", dataset["error"]
    assert dataset["num_samples"] == SAMPLES
    assert dataset["sample_shape"] == [FEATURES]
    assert dataset["dtype"] == "float32"
    assert dataset["size_bytes"] == size
