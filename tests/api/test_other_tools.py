"""Teachers made by other tools, through the public API: upload (with ``output_name`` and
``output_kind``), validation, a job, and the downloaded student measured outside the service
against the teacher itself (scikit-learn's ``predict``, the torch model's argmax)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import _finished, _ready
from tests.conftest import start_worker, stop_process, wait_for
from tests.factories import digits, npz_bytes
from tests.teacher_exports import (
    sklearn_model,
    sklearn_onnx_bytes,
    torch_pt2_bytes,
    torch_teacher,
)

# Real jobs through worker processes: the whole suite runs them, the fast lane does not.
pytestmark = pytest.mark.slow

# Small and quick, and enough for the student to follow these teachers on held-out digits.
SPEC: dict[str, Any] = {
    "student": {"size_ratio": 1.0, "max_parameters": 5000},
    "distillation": {"temperature": 2.0},
    "training": {"epochs": 8, "batch_size": 64, "learning_rate": 0.003},
    "export_formats": ["onnx"],
}
MIN_AGREEMENT = 0.93


@pytest.fixture(scope="module")
def client(shared_client: TestClient) -> TestClient:
    return shared_client


@pytest.fixture(scope="module")
def job_worker(shared_client: TestClient) -> Iterator[subprocess.Popen[bytes]]:
    """One gpu-queue worker for the whole module (its spare child is reused by every job)."""
    proc = start_worker("gpu", "gpu-other-tools", "worker-gpu-other-tools.log")
    try:
        yield proc
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def data(client: TestClient) -> dict[str, str]:
    x, _, xe, ye = digits()
    return {
        "transfer": _ready(client, "datasets", "transfer.npz", npz_bytes(x)),
        "eval": _ready(client, "datasets", "eval.npz", npz_bytes(xe, ye)),
    }


def _upload(client: TestClient, name: str, blob: bytes, **fields: str) -> dict[str, Any]:
    resp = client.post("/v1/teachers", files={"file": (name, blob)}, data=fields)
    assert resp.status_code == 201, resp.text
    teacher_id = resp.json()["id"]

    def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/teachers/{teacher_id}").json()
        return None if body["status"] == "validating" else body

    return dict(wait_for(settled, timeout=120))


def _distil(
    client: TestClient, data: dict[str, str], teacher_ids: list[str], tmp_path: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """Run a job; return its report and the downloaded ONNX student's classes on eval."""
    import onnxruntime as ort

    body = {
        "teacher_ids": teacher_ids,
        "dataset_id": data["transfer"],
        "eval_dataset_id": data["eval"],
        **SPEC,
    }
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = _finished(client, resp.json()["id"], timeout=420)
    assert job["status"] == "succeeded", job["error"]
    resp = client.get(f"/v1/jobs/{job['id']}/student", params={"format": "onnx"})
    assert resp.status_code == 200
    path = tmp_path / "student.onnx"
    path.write_bytes(resp.content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xe = digits()[2]
    logits = session.run(None, {session.get_inputs()[0].name: xe})[0]
    return job["report"], logits.argmax(1)


def _check_against_the_teacher(
    report: dict[str, Any], student: np.ndarray, teacher: np.ndarray
) -> None:
    ye = digits()[3]
    agreement = float(np.mean(student == teacher))
    print(f"agreement {agreement:.4f} teacher accuracy {np.mean(teacher == ye):.4f}")
    assert agreement >= MIN_AGREEMENT
    assert report["agreement_top1"] == pytest.approx(agreement, abs=1e-9)
    assert abs(report["teacher_accuracy"] - float(np.mean(teacher == ye))) <= 0.01


def _sklearn_case(kind: str, zipmap: bool) -> Any:
    return pytest.param(
        kind,
        zipmap,
        id=f"{kind}-{'zipmap' if zipmap else 'tensor'}",
        marks=[] if (kind, zipmap) == ("mlp", True) else [pytest.mark.slow],
    )


@pytest.mark.parametrize(
    ("kind", "zipmap"),
    [_sklearn_case(k, z) for k in ("mlp", "forest", "boosting") for z in (True, False)],
)
def test_skl2onnx_teacher_distils_into_a_student_that_follows_it(
    client: TestClient,
    data: dict[str, str],
    job_worker: object,
    tmp_path: Path,
    kind: str,
    zipmap: bool,
) -> None:
    teacher = _upload(client, f"{kind}.onnx", sklearn_onnx_bytes(kind, zipmap=zipmap))
    assert teacher["status"] == "ready", teacher["error"]
    assert teacher["output_name"] == ("output_probability" if zipmap else "probabilities")
    assert teacher["output_kind"] == "probabilities"
    assert [o["dtype"] for o in teacher["outputs"]][0] == "int64"
    assert teacher["output_reason"]

    report, student = _distil(client, data, [teacher["id"]], tmp_path)
    _check_against_the_teacher(report, student, sklearn_model(kind).predict(digits()[2]))


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "dict"])
def test_pt2_teacher_with_a_softmax_head_or_a_dict_distils(
    client: TestClient, data: dict[str, str], job_worker: object, tmp_path: Path, head: str
) -> None:
    import torch

    teacher = _upload(client, f"{head}.pt2", torch_pt2_bytes(head))
    assert teacher["status"] == "ready", teacher["error"]
    expected = {"softmax": ("output", "probabilities"), "dict": ("logits", "logits")}[head]
    assert (teacher["output_name"], teacher["output_kind"]) == expected

    report, student = _distil(client, data, [teacher["id"]], tmp_path)
    with torch.inference_mode():
        out = torch_teacher(head)(torch.from_numpy(digits()[2]))
    scores = out["logits"] if isinstance(out, dict) else out
    _check_against_the_teacher(report, student, scores.argmax(-1).numpy())


@pytest.mark.slow
def test_ensemble_of_probabilities_and_logits_averages_their_distributions(
    client: TestClient, data: dict[str, str], job_worker: object, tmp_path: Path
) -> None:
    import torch

    forest = _upload(client, "forest.onnx", sklearn_onnx_bytes("forest", zipmap=True))
    network = _upload(client, "dict.pt2", torch_pt2_bytes("dict"))
    kinds = [forest["output_kind"], network["output_kind"]]
    assert kinds == ["probabilities", "logits"]

    report, student = _distil(client, data, [forest["id"], network["id"]], tmp_path)
    xe = digits()[2]
    with torch.inference_mode():
        network_probs = torch_teacher("dict")(torch.from_numpy(xe))["logits"].softmax(-1)
    mean = (sklearn_model("forest").predict_proba(xe) + network_probs.double().numpy()) / 2
    _check_against_the_teacher(report, student, mean.argmax(1))


def _rejection(teacher: dict[str, Any]) -> dict[str, Any]:
    assert teacher["status"] == "rejected"
    return dict(teacher["error"])


def test_output_name_and_kind_from_the_form_are_kept_and_honoured(
    client: TestClient, worker_process: object
) -> None:
    blob = sklearn_onnx_bytes("mlp", zipmap=False)
    resp = client.post(
        "/v1/teachers",
        files={"file": ("t.onnx", blob)},
        data={"output_name": "probabilities", "output_kind": "probabilities"},
    )
    assert resp.status_code == 201, resp.text
    assert (resp.json()["output_name"], resp.json()["output_kind"]) == (
        "probabilities",
        "probabilities",
    )
    teacher = _upload(client, "t.onnx", blob, output_name="probabilities")
    assert teacher["status"] == "ready", teacher["error"]
    assert teacher["outputs"] == [
        {"name": "label", "dtype": "int64", "shape": [None]},
        {"name": "probabilities", "dtype": "float32", "shape": [None, 10]},
    ]
    assert "output_name 'probabilities' was given at upload" in teacher["output_reason"]
    assert teacher["num_classes"] == 10


def test_an_unknown_output_kind_is_422_and_nothing_is_stored(
    client: TestClient, worker_process: object
) -> None:
    before = len(client.get("/v1/teachers").json()["items"])
    resp = client.post(
        "/v1/teachers",
        files={"file": ("t.onnx", sklearn_onnx_bytes("mlp", zipmap=False))},
        data={"output_kind": "softmax"},
    )
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "output_kind must be one of auto, logits" in resp.json()["detail"]
    assert len(client.get("/v1/teachers").json()["items"]) == before


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"output_name": "nope"}, "bad_output_name", "'nope' is not an output"),
        ({"output_name": "label"}, "bad_output_name", "not float [N, classes] scores"),
        ({"output_kind": "log_probabilities"}, "bad_output_kind", "gave positive values"),
    ],
)
def test_an_output_that_does_not_fit_rejects_the_teacher_saying_why(
    client: TestClient,
    worker_process: object,
    fields: dict[str, str],
    code: str,
    says: str,
) -> None:
    teacher = _upload(client, "t.onnx", sklearn_onnx_bytes("mlp", zipmap=False), **fields)
    error = _rejection(teacher)
    assert error["code"] == code and says in error["message"]


def _several_floats() -> bytes:
    """A torch model with three float outputs, none named logits."""
    import tempfile

    import torch
    from torch import nn

    from tests.factories import save_pt2

    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scores, self.embed = nn.Linear(64, 10), nn.Linear(64, 128)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            z = self.scores(x)
            return {"scores": z, "probabilities": z.softmax(-1), "embedding": self.embed(x)}

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        return save_pt2(Heads().eval(), Path(tmp) / "heads.pt2").read_bytes()


def test_several_float_outputs_are_rejected_until_output_name_picks_one(
    client: TestClient, worker_process: object
) -> None:
    blob = _several_floats()
    error = _rejection(_upload(client, "heads.pt2", blob))
    assert error["code"] == "ambiguous_output"
    assert error["message"].startswith(
        "the teacher has 3 float outputs: scores [N,10], probabilities [N,10], "
        "embedding [N,128]; pass output_name"
    )
    chosen = _upload(client, "heads.pt2", blob, output_name="probabilities")
    assert chosen["status"] == "ready", chosen["error"]
    assert (chosen["output_name"], chosen["output_kind"]) == ("probabilities", "probabilities")
