"""Real teachers (torch.export and ONNX) load with correct metadata and run for any batch."""

from pathlib import Path

import pytest
import torch

from engine.errors import UserError
from engine.teachers import inspect_teacher, load_teacher
from tests.engine.hostile import MLP, SmallCNN, parameter_count, save_onnx, save_pt2


@pytest.fixture(scope="module")
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP().eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teachers")


def test_pt2_mlp_with_dynamic_batch_reports_its_metadata(mlp: MLP, folder: Path) -> None:
    path = save_pt2(mlp, torch.zeros(4, 64), folder / "mlp.pt2", dynamic=True)
    info = inspect_teacher(path, "torch_export")
    assert {k: info[k] for k in ("input_shape", "input_dtype", "num_classes", "parameters")} == {
        "input_shape": [None, 64],
        "input_dtype": "float32",
        "num_classes": 10,
        "parameters": parameter_count(mlp),
    }
    assert info["outputs"] == [{"name": "output", "dtype": "float32", "shape": [None, 10]}]
    assert (info["output_name"], info["output_kind"]) == ("output", "logits")


def test_pt2_teacher_reproduces_the_module(mlp: MLP, folder: Path) -> None:
    path = save_pt2(mlp, torch.zeros(4, 64), folder / "mlp_same.pt2", dynamic=True)
    teacher = load_teacher(path, "torch_export")
    x = torch.randn(7, 64)
    expected = mlp(x).detach()
    out = teacher(x)
    assert out.dtype == torch.float32 and out.shape == (7, 10)
    torch.testing.assert_close(out, expected)
    assert teacher.format == "torch_export" and teacher.module is not None


def test_pt2_with_static_batch_of_one_takes_any_batch(mlp: MLP, folder: Path) -> None:
    path = save_pt2(mlp, torch.zeros(1, 64), folder / "static.pt2", dynamic=False)
    teacher = load_teacher(path, "torch_export")
    assert teacher.input_shape == [None, 64] and teacher.static_batch == 1
    x = torch.randn(5, 64)
    torch.testing.assert_close(teacher(x), mlp(x).detach())


def test_pt2_with_static_batch_pads_the_last_chunk(mlp: MLP, folder: Path) -> None:
    path = save_pt2(mlp, torch.zeros(4, 64), folder / "static4.pt2", dynamic=False)
    teacher = load_teacher(path, "torch_export")
    x = torch.randn(6, 64)
    torch.testing.assert_close(teacher(x), mlp(x).detach())


def test_pt2_cnn_reports_channels_first_shape(folder: Path) -> None:
    torch.manual_seed(1)
    cnn = SmallCNN().eval()
    path = save_pt2(cnn, torch.zeros(2, 1, 8, 8), folder / "cnn.pt2", dynamic=True)
    info = inspect_teacher(path, "torch_export")
    assert info["input_shape"] == [None, 1, 8, 8]
    assert info["num_classes"] == 10
    assert info["parameters"] == parameter_count(cnn)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(load_teacher(path, "torch_export")(x), cnn(x).detach())


def test_onnx_mlp_reports_metadata_and_matches_torch(mlp: MLP, folder: Path) -> None:
    path = save_onnx(mlp, torch.zeros(2, 64), folder / "mlp.onnx")
    teacher = load_teacher(path, "onnx")
    assert teacher.input_shape == [None, 64]
    assert teacher.input_dtype == "float32"
    assert teacher.num_classes == 10
    assert teacher.module is None and teacher.format == "onnx"
    # The exporter folds BatchNorm into constants, so count the ONNX initializers instead.
    assert teacher.parameters is not None and teacher.parameters >= 64 * 32 + 32 * 10
    x = torch.randn(9, 64)
    torch.testing.assert_close(teacher(x), mlp(x).detach(), rtol=1e-4, atol=1e-5)


def test_unknown_teacher_format_is_refused(folder: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_teacher(folder / "missing.bin", "keras")
    assert caught.value.code == "unsupported_format"


class ScaledLinear(torch.nn.Module):
    """Carries a non-persistent buffer and a lifted tensor constant: data/constants records."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.register_buffer("scale", torch.full((3,), 2.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale + torch.tensor([1.0, 2.0, 3.0])


def test_pt2_with_tensor_constants_is_accepted(folder: Path) -> None:
    module = ScaledLinear().eval()
    path = save_pt2(module, torch.zeros(2, 4), folder / "constants.pt2", dynamic=True)
    teacher = load_teacher(path, "torch_export")
    assert teacher.num_classes == 3 and teacher.parameters == 4 * 3 + 3
    x = torch.randn(5, 4)
    torch.testing.assert_close(teacher(x), module(x).detach())
