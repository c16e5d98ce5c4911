"""Hostile files sent as a user would: each is refused at upload or ends `rejected` with a
reason, and no payload runs (the marker file a payload would create never appears)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_for
from tests.engine import hostile
from tests.factories import save_pt2, train_mlp_teacher

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pt2(train_mlp_teacher(hidden=16, epochs=1), tmp_path_factory.mktemp("t") / "t.pt2")


def _settle(client: TestClient, kind: str, name: str, data: bytes) -> dict[str, Any]:
    resp = client.post(f"/v1/{kind}", files={"file": (name, data)})
    if resp.status_code != 201:
        assert resp.status_code in (400, 413, 415, 422), resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        return {"status": "refused", "http": resp.status_code}
    obj_id = resp.json()["id"]
    obj = wait_for(
        lambda: (o := client.get(f"/v1/{kind}/{obj_id}").json())["status"] != "validating" and o,
        timeout=90,
    )
    return dict(obj)


TEACHERS: dict[str, Callable[[Path, Path, Path], Path]] = {
    "pickled weight": hostile.pt2_with_pickled_weight,
    "pickled sample inputs": hostile.pt2_with_pickled_sample_inputs,
    "sympy eval": hostile.pt2_with_sympy_payload,
    "opaque constant": hostile.pt2_with_opaque_constant,
}


@pytest.mark.parametrize("attack", sorted(TEACHERS))
def test_hostile_teacher_is_rejected_and_runs_nothing(
    attack: str, client: TestClient, worker: object, clean_pt2: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = TEACHERS[attack](clean_pt2, tmp_path / "evil.pt2", marker)
    result = _settle(client, "teachers", "evil.pt2", evil.read_bytes())
    assert result["status"] in ("rejected", "refused"), result
    if result["status"] == "rejected":
        assert result["error"]["code"] and result["error"]["message"]
    assert not marker.exists()


def _npy(array: np.ndarray, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def test_hostile_datasets_are_rejected(client: TestClient, worker: object, tmp_path: Path) -> None:
    cases = {
        "object.npy": _npy(np.array([1, "x"], dtype=object), allow_pickle=True),
        "lying.npy": hostile.npy_with_lying_header(tmp_path / "lying.npy").read_bytes(),
        "traversal.zip": hostile.zip_with_entries(
            tmp_path / "t.zip", {"../evil.png": hostile.image_bytes("L", (8, 8), "PNG")}
        ).read_bytes(),
        "bomb.zip": hostile.zip_with_entries(
            tmp_path / "b.zip", {"a/x.png": hostile.png_bomb()}
        ).read_bytes(),
    }
    for name, data in cases.items():
        result = _settle(client, "datasets", name, data)
        assert result["status"] in ("rejected", "refused"), (name, result)
