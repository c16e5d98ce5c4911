"""The image students (resnet, mobilenetv2): sizing to a budget, their layouts, auto's pick,
and every export format reproducing them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.students import fits_input
from engine.errors import UserError
from engine.export import export_student, runtime_for, verify_exports
from engine.students import REGISTRY, build_student, count_parameters, size_student
from engine.students.layers import image_downsamplings
from engine.students.mobilenetv2 import mobilenetv2_for_width
from engine.students.resnet import resnet_for_width

IMAGE_STUDENTS = ["resnet", "mobilenetv2"]
FORMATS = ["torch_export", "onnx", "safetensors"]


@pytest.mark.parametrize("name", IMAGE_STUDENTS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 96, 80)])
@pytest.mark.parametrize("target", [15_000, 60_000, 700_000])
def test_image_student_lands_within_25_percent_of_its_budget(
    name: str, shape: tuple[int, int, int], target: int
) -> None:
    picked, config = size_student(name, shape, 10, target=target, cap=target * 2)
    model = build_student(picked, config)
    assert picked == name
    assert count_parameters(model) == REGISTRY[name].parameters(config)
    assert abs(count_parameters(model) - target) <= 0.25 * target
    assert model.eval()(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize(("side", "steps", "final"), [(28, 2, 7), (32, 3, 4), (224, 5, 7)])
@pytest.mark.parametrize("name", IMAGE_STUDENTS)
def test_the_final_map_is_4_to_7_pixels(name: str, side: int, steps: int, final: int) -> None:
    assert image_downsamplings(side, side) == steps
    model = build_student(name, REGISTRY[name].families[0]((1, side, side), 10, 4)).eval()
    seen: list[tuple[int, ...]] = []
    pool = next(m for m in model.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d))
    pool.register_forward_hook(lambda _m, args, _out: seen.append(tuple(args[0].shape[-2:])))
    model(torch.rand(1, 1, side, side))
    assert seen == [(final, final)]


def test_at_imagenet_size_the_layouts_are_resnet18_and_mobilenetv2() -> None:
    """torchvision's resnet18 has 11,689,512 parameters (a 7×7 stem: 7,680 more than our 3×3
    one) and mobilenet_v2 3,504,872: the same stages, widths and blocks."""
    resnet = resnet_for_width((3, 224, 224), 1000, 64, blocks=2)
    assert (resnet.stages, resnet.stem_downsamplings) == (4, 2)
    assert REGISTRY["resnet"].parameters(resnet) == 11_689_512 - 3 * 64 * (49 - 9)
    mobilenet = mobilenetv2_for_width((3, 224, 224), 1000, 32)
    assert REGISTRY["mobilenetv2"].parameters(mobilenet) == 3_504_872
    blocks = [m for m in build_student("mobilenetv2", mobilenet).modules() if hasattr(m, "body")]
    assert len(blocks) == 17
    assert sum(getattr(b, "residual") for b in blocks) == 10  # noqa: B009


def test_mobilenetv2_blocks_are_depthwise_with_a_linear_bottleneck() -> None:
    model = build_student("mobilenetv2", mobilenetv2_for_width((3, 32, 32), 10, 32))
    block = model[5]  # stage 2's first inverted residual: 1x1 expand, depthwise 3x3, 1x1
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
    assert convs[1].groups == convs[1].in_channels == convs[0].out_channels == 6 * 16
    *_, projection, last = block.body  # the linear bottleneck: conv, batch norm, no activation
    assert projection is convs[2] and isinstance(last, torch.nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("shape", "target", "expected"),
    [
        ((1, 28, 28), 20_000, "resnet"),
        ((3, 32, 32), 200_000, "resnet"),
        ((3, 32, 32), 1_000_000, "mobilenetv2"),
        ((3, 224, 224), 2_500_000, "mobilenetv2"),
        ((1, 16, 16), 1_000_000, "cnn"),
        ((1, 8, 8), 20_000, "cnn"),
    ],
)
def test_auto_picks_by_image_size_and_budget(
    shape: tuple[int, ...], target: int, expected: str
) -> None:
    name, config = size_student("auto", shape, 10, target=target, cap=target * 2)
    assert name == expected
    assert abs(REGISTRY[name].parameters(config) - target) <= 0.25 * target


@pytest.mark.parametrize("name", IMAGE_STUDENTS)
def test_image_students_refuse_images_under_16_pixels(name: str) -> None:
    with pytest.raises(UserError, match="does not fit"):
        size_student(name, (1, 8, 8), 10, target=10_000, cap=100_000)
    assert not fits_input(name, [1, 8, 8]) and not fits_input(name, [64])
    assert fits_input(name, [3, 16, 16]) and REGISTRY[name].fits((3, 16, 16))


@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGE_STUDENTS)
def test_full_depth_image_student_exports_in_every_format(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    picked, config = size_student(name, (3, 32, 32), 10, target=100_000, cap=200_000)
    model = build_student(picked, config).eval()
    x = torch.rand(9, 3, 32, 32)
    files = export_student(model, picked, config, x, tmp_path, FORMATS)
    assert max(verify_exports(model, files, x).values()) <= 1e-4
    with torch.inference_mode():
        for fmt in FORMATS:
            run = runtime_for(fmt, files[fmt])
            xb = torch.rand(3, 3, 32, 32)
            assert torch.allclose(run(xb), model(xb), atol=1e-4)
