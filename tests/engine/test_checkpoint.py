"""Checkpoints: strict loading, and a resume in a new process that changes no byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.errors import Stopped
from tests.engine.test_trainer import config, run, student

ROOT = Path(__file__).resolve().parents[2]


def _saved(tmp: Path) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = student()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 6)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp, model=model, optimizer=optimizer, train={"step": 1}, fingerprint="f")
    return model, optimizer


def _fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = student(seed=9)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path) -> None:
    model, optimizer = _saved(tmp_path)
    expected_draw = torch.rand(3)
    other, other_opt = _fresh()
    assert load_checkpoint(tmp_path, model=other, optimizer=other_opt, fingerprint="f") == {
        "step": 1
    }
    assert save(other.state_dict()) == save(model.state_dict())
    assert torch.equal(
        other_opt.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert torch.equal(torch.rand(3), expected_draw)


def _rewrite(tmp: Path, change: dict[str, torch.Tensor | None]) -> None:
    pointer = json.loads((tmp / "checkpoint.json").read_text())
    path = tmp / pointer["tensors_file"]
    tensors = load(path.read_bytes())
    for key, value in change.items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    blob = save(tensors)
    path.write_bytes(blob)
    import hashlib

    pointer["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    (tmp / "checkpoint.json").write_text(json.dumps(pointer))


@pytest.mark.parametrize(
    "change",
    [{"model.extra": torch.zeros(1)}, {"model.0.weight": None}, {"optim.0.exp_avg": None}],
    ids=["unused-key", "missing-model-key", "missing-optimizer-key"],
)
def test_refuses_unused_or_missing_keys(
    tmp_path: Path, change: dict[str, torch.Tensor | None]
) -> None:
    _saved(tmp_path)
    _rewrite(tmp_path, change)
    model, optimizer = _fresh()
    with pytest.raises(CheckpointError, match="keys differ"):
        load_checkpoint(tmp_path, model=model, optimizer=optimizer, fingerprint="f")


def test_refuses_another_jobs_checkpoint_and_a_tampered_file(tmp_path: Path) -> None:
    _saved(tmp_path)
    model, optimizer = _fresh()
    with pytest.raises(CheckpointError, match="another job"):
        load_checkpoint(tmp_path, model=model, optimizer=optimizer, fingerprint="g")
    pointer = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / pointer["tensors_file"]).write_bytes(b"x" * 10)
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(tmp_path, model=model, optimizer=optimizer, fingerprint="f")


def test_only_the_latest_tensor_file_is_kept(tmp_path: Path) -> None:
    run(tmp_path, config(checkpoint_every=2))
    assert len(list(tmp_path.glob("checkpoint-*.safetensors"))) == 1
    assert not list(tmp_path.glob(".*tmp"))


STOP_AFTER = """
import sys, torch
from pathlib import Path
torch.set_num_threads({threads})
from tests.engine.test_trainer import config, run
from engine import trainer
from engine.errors import Stopped
trainer.STOP_CHECK_EVERY_S = 0.0  # ask before every step: stop at exactly step k
calls = [0]
def stop():
    calls[0] += 1
    return calls[0] > {k}
try:
    run(Path(sys.argv[1]), config(epochs={epochs}, checkpoint_every={every}), should_stop=stop)
except Stopped:
    sys.exit(0)
sys.exit(1)
"""


@pytest.mark.parametrize(("k", "every"), [(13, 5), (12, 100)], ids=["mid-epoch", "epoch-boundary"])
def test_resume_in_a_new_process_gives_the_same_bytes(tmp_path: Path, k: int, every: int) -> None:
    cfg = config(epochs=5, checkpoint_every=every)
    uninterrupted = run(tmp_path / "straight", cfg)
    script = STOP_AFTER.format(threads=torch.get_num_threads(), k=k, epochs=5, every=every)
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "resumed")], cwd=ROOT, check=True, timeout=120
    )
    pointer = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())
    assert pointer["train"]["step"] == k
    assert run(tmp_path / "resumed", cfg) == uninterrupted


def test_a_run_that_finished_is_not_trained_again(tmp_path: Path) -> None:
    first = run(tmp_path, config())
    steps: list[object] = []
    assert run(tmp_path, config(), on_step=steps.append) == first
    assert steps == []


def test_resume_with_other_training_settings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Stopped):
        run(tmp_path, config(), should_stop=lambda: True)
    with pytest.raises(CheckpointError):
        run(tmp_path, config(learning_rate=0.5))
