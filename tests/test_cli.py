from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import ROOT


def test_keys_create_prints_a_working_key_once(client: TestClient) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stillhouse.cli", "keys", "create", "--tenant", "cli-tenant"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    key = out.stdout.strip()
    assert key.startswith("sh_") and len(key) > 30
    resp = client.get("/v1/teachers", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200


def test_students_lists_the_registry(client: TestClient) -> None:
    items = client.get("/v1/students").json()["items"]
    assert [s["name"] for s in items] == [
        "auto",
        "mlp",
        "cnn",
        "cnn1d",
        "resnet",
        "mobilenetv2",
        "text_cnn",
        "transformer",
        "gpt",
    ]
    images = {s["name"]: s for s in items if s.get("min_side")}
    assert set(images) == {"resnet", "mobilenetv2"}
    assert images["resnet"]["input_ranks"] == [3] and images["resnet"]["min_side"] == 16
    assert {"width", "blocks"} <= set(images["resnet"]["knobs"])
    assert {"width", "depth", "expansion"} <= set(images["mobilenetv2"]["knobs"])


def test_readyz_names_the_broker_when_it_is_down(monkeypatch: Any, client: TestClient) -> None:
    from api import publisher
    from core.settings import get_settings

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = closed.getsockname()[1]
    monkeypatch.setattr(get_settings(), "broker_url", f"redis://127.0.0.1:{port}/0")
    publisher._client.cache_clear()
    try:
        resp = client.get("/readyz")
    finally:
        publisher._client.cache_clear()
        closed.close()
    assert resp.status_code == 503
    assert resp.json()["failed"] == ["broker"]
