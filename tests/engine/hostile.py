"""Build real teachers and hostile uploads at test time (no binary blobs in the repository).

Hostile pickles carry `MarkerPayload`: unpickling it calls open(marker, "w"), so a test
proves a payload never ran by checking that the marker file does not exist.
"""

import io
import json
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


class MarkerPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


# --- real teachers ----------------------------------------------------------------------


class MLP(torch.nn.Module):
    def __init__(self, features: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes)
        )
        self.norm = torch.nn.BatchNorm1d(classes)  # a buffer-carrying layer, counted too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.net(x))


class SmallCNN(torch.nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.head = torch.nn.Linear(4 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(x.flatten(1))


def parameter_count(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() for t in tensors if t.is_floating_point())


def save_pt2(module: torch.nn.Module, example: torch.Tensor, path: Path, *, dynamic: bool) -> Path:
    module.eval()
    dynamic_shapes = {"x": {0: torch.export.Dim("batch")}} if dynamic else None
    program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes)
    torch.export.save(program, str(path))
    return path


def save_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    module.eval()
    with warnings.catch_warnings():
        # torch 2.13's exporter trips its own pytree deprecation (LeafSpec) internally.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            external_data=False,
            verbose=False,
        )
    return path


# --- hostile .pt2 archives --------------------------------------------------------------


def rewrite_zip(
    source: Path,
    target: Path,
    change: Callable[[str, bytes], bytes | None],
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Copy a zip, passing each member through `change` (None drops it), then add `extra`."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/", 1)[0]
        for name in old.namelist():
            data = change(name.split("/", 1)[1], old.read(name))
            if data is not None:
                new.writestr(name, data)
        for record, data in (extra or {}).items():
            new.writestr(f"{root}/{record}", data)
    return target


def torch_blob(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def pt2_with_pickled_weight(source: Path, target: Path, marker: Path) -> Path:
    """Flag the first weight use_pickle, so torch.load(weights_only=False) would run it."""

    def change(record: str, data: bytes) -> bytes:
        if record == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if record == "data/weights/weight_0":
            return torch_blob(MarkerPayload(marker))
        return data

    return rewrite_zip(source, target, change)


def pt2_with_pickled_sample_inputs(source: Path, target: Path, marker: Path) -> Path:
    """torch retries a failed weights_only load of sample inputs without weights_only."""

    def change(record: str, data: bytes) -> bytes:
        if record == "data/sample_inputs/model.pt":
            return torch_blob(((MarkerPayload(marker),), {}))
        return data

    return rewrite_zip(source, target, change)


def pt2_with_sympy_payload(source: Path, target: Path, marker: Path) -> Path:
    """Symbolic shapes are parsed with sympy.sympify, i.e. Python eval."""
    code = f"__import__('builtins').open({str(marker)!r}, 'w') and "

    def change(record: str, data: bytes) -> bytes:
        if record == "models/model.json":
            text = data.decode()
            assert '"expr_str": "' in text, "needs a dynamic-batch export"
            return text.replace('"expr_str": "', f'"expr_str": "{code}', 1).encode()
        return data

    return rewrite_zip(source, target, change)


def pt2_with_opaque_constant(source: Path, target: Path, marker: Path) -> Path:
    """torch.export.load unpickles opaque_obj_* constants with plain pickle.loads."""
    import pickle

    def change(record: str, data: bytes) -> bytes:
        if record == "data/constants/model_constants_config.json":
            entry = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}
            return json.dumps({"config": {"evil": {**entry, "tensor_meta": None}}}).encode()
        return data

    extra = {"data/constants/opaque_obj_0": pickle.dumps(MarkerPayload(marker))}
    return rewrite_zip(source, target, change, extra)


def pt2_with_extra_member(source: Path, target: Path, record: str) -> Path:
    return rewrite_zip(source, target, lambda _, data: data, {record: b"\x7fELF not really"})


def pt2_with_graph_target(source: Path, target: Path, operator_name: str) -> Path:
    def change(record: str, data: bytes) -> bytes:
        if record == "models/model.json":
            model = json.loads(data)
            model["graph_module"]["graph"]["nodes"][0]["target"] = operator_name
            return json.dumps(model).encode()
        return data

    return rewrite_zip(source, target, change)


# --- hostile archives and files -------------------------------------------------------


def zip_with_entries(path: Path, entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> Path:
    """Write a zip whose names are taken verbatim (zipfile would not sanitise them)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return path


def onnx_with_external_data(path: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto()
    weight.name = "w"
    weight.data_type = TensorProto.FLOAT
    weight.dims.extend([4, 3])
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def npy_with_lying_header(path: Path, claimed_elements: int = 10**12) -> Path:
    with open(path, "wb") as file:
        header = {"descr": "<f4", "fortran_order": False, "shape": (claimed_elements,)}
        np.lib.format.write_array_header_1_0(file, header)
        file.write(b"\0" * 1024)
    return path


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width×height grey pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def image_bytes(mode: str, size: tuple[int, int], image_format: str, value: int = 128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, color=value if mode == "L" else (value, 0, 255 - value)).save(
        buffer, format=image_format
    )
    return buffer.getvalue()


# --- files that claim a device or inflate far beyond their size ---------------------------


def with_cuda_location(blob: bytes) -> bytes:
    """A torch.save zip whose storages claim the location "cuda" instead of "cpu"."""
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x04\x00\x00\x00cuda"
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as old, zipfile.ZipFile(out, "w") as new:
        for name in old.namelist():
            data = old.read(name)
            if name.endswith("data.pkl"):
                assert cpu in data
                data = data.replace(cpu, cuda)
            new.writestr(name, data)
    return out.getvalue()


def pt2_with_cuda_sample_inputs(source: Path, target: Path) -> Path:
    """On a host without CUDA, torch.export.load's weights_only=True load of these sample
    inputs fails, and it retries with torch.load(weights_only=False)."""

    def change(record: str, data: bytes) -> bytes:
        if record == "data/sample_inputs/model.pt":
            return with_cuda_location(torch_blob(((torch.zeros(4, 64),), {})))
        return data

    return rewrite_zip(source, target, change)


def pt2_with_cuda_pickled_weight(source: Path, target: Path) -> Path:
    """A use_pickle weight whose storage claims "cuda"."""

    def change(record: str, data: bytes) -> bytes:
        if record == "data/weights/model_weights_config.json":
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if record == "data/weights/weight_0":
            return with_cuda_location(torch_blob(torch.zeros(32, 64)))
        return data

    return rewrite_zip(source, target, change)


def zip_with_inflating_member(path: Path, name: str, size: int, head: bytes = b"") -> Path:
    """A small zip whose member `name` inflates to `size` bytes (`head`, then zeros),
    written in pieces: building it never holds the member in memory."""
    piece = b"\0" * (16 << 20)
    archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
    with archive, archive.open(name, "w", force_zip64=True) as member:
        member.write(head)
        left = size - len(head)
        while left > 0:
            member.write(piece[: min(left, len(piece))])
            left -= len(piece)
    return path


def npz_inflating(path: Path, size: int) -> Path:
    """An .npz whose x.npy has an honest header for `size` bytes of float32 zeros: the
    header matches the inflated size, so only the compression ratio gives it away."""
    header = io.BytesIO()
    shape = (size // 4 // 64, 64)
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return zip_with_inflating_member(
        path, "x.npy", len(header.getvalue()) + shape[0] * 64 * 4, header.getvalue()
    )


def onnx_memory_bomb(path: Path, elements: int = 2**29) -> Path:
    """A tiny ONNX classifier that builds a float tensor of `elements` zeros on every run
    (ConstantOfShape, then ReduceSum) and adds the sum to its logits."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["shape"],
            value=helper.make_tensor("shape", TensorProto.INT64, [1], [elements]),
        ),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["big"],
            value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
        helper.make_node("MatMul", ["x", "w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "total"], ["logits"]),
    ]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.1] * 12)
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path
