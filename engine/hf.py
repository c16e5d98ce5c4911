"""A Hugging Face model folder as a teacher: a ZIP of ``config.json``, ``model.safetensors``
and usually ``tokenizer.json``, loaded by ``transformers`` inside the sandbox.

Nothing in the folder runs and nothing is unpickled:

- the archive passes the zip rules (``guard.check_zip``: no traversal, links, bombs) and
  holds only the files named in ``MEMBERS`` or small text files (``TEXT_SUFFIXES``); any
  other member (``pytorch_model.bin``, ``*.pt``, ``*.pkl``, ``*.py``, ...) is refused;
- ``config.json`` names one architecture of ``ARCHITECTURES`` (the one allow-list), and no
  key that asks for code (``auto_map``, ``trust_remote_code``, ``custom_pipelines``) or for
  loading machinery beyond the plain model (``quantization_config``, ``_attn_implementation*``);
- the class is looked up by that name in ``transformers`` (never an Auto class, which could
  follow ``auto_map``) and loaded with ``trust_remote_code=False``, ``local_files_only=True``
  and ``use_safetensors=True`` from a folder that holds no other weights file; every weight
  the class expects must be in the file (a missing classification head is refused, not
  initialised at random).

The teacher then behaves like a token ONNX or ``.pt2`` teacher: named integer inputs
(``input_ids``, ``attention_mask``, and ``token_type_ids`` when the model has segment
embeddings), logits out.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import nn

from core.errors import ErrorCode
from engine.errors import UserError
from engine.guard import ArchiveLimits, check_zip

# The one allow-list: the architectures a folder may name, and the task each is distilled as.
ARCHITECTURES: dict[str, str] = {
    **{
        f"{name}ForSequenceClassification": "classification"
        for name in (
            "Bert",
            "DistilBert",
            "Roberta",
            "XLMRoberta",
            "Electra",
            "Albert",
            "DebertaV2",
            "Deberta",
            "MPNet",
            "ModernBert",
        )
    },
    **{
        f"{name}ForCausalLM": "language_model"
        for name in ("Llama", "Mistral", "Qwen2", "Qwen3", "GPTNeoX", "Gemma", "Phi3")
    },
    "GPT2LMHeadModel": "language_model",
}
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
MEMBERS = frozenset({WEIGHTS, CONFIG, TOKENIZER})
TEXT_SUFFIXES = (".json", ".txt", ".md")  # tokenizer_config.json, vocab.txt, README.md, ...
MAX_TEXT_BYTES = 64 * 1024**2  # a text member (a tokenizer.json of a 250 k vocabulary: 17 MB)
MAX_CONFIG_BYTES = 1024**2
REFUSED_KEYS = frozenset(
    {"auto_map", "trust_remote_code", "custom_pipelines", "quantization_config"}
)
REFUSED_PREFIXES = ("_attn_implementation",)  # CVE-2026-4372: code fetched through it
WHAT = "The model folder"


@dataclass
class HFFolder:
    """The vetted folder, unpacked: where it is, its config and architecture."""

    path: Path
    config: dict[str, Any]
    architecture: str
    task: str

    @property
    def tokenizer(self) -> Path | None:
        path = self.path / TOKENIZER
        return path if path.is_file() else None


def _root(names: list[str]) -> str:
    """The one folder every member sits in ("" when they sit at the top)."""
    files = [n for n in names if not n.endswith("/")]
    if CONFIG in files:
        return ""
    tops = {n.split("/", 1)[0] for n in files}
    if len(tops) == 1 and all("/" in n for n in files):
        return tops.pop() + "/"
    return ""


def unpack(path: str | Path, out: Path, limits: ArchiveLimits | None = None) -> HFFolder:
    """Check the archive and its config, then write the accepted members into ``out``."""
    limits = limits or ArchiveLimits()
    try:
        with zipfile.ZipFile(path) as archive:
            members = check_zip(archive, limits, what=WHAT)
            root = _root([m.filename for m in members])
            wanted = _vet_members(members, root)
            config = _read_config(archive, wanted)
            architecture, task = _vet_config(config)
            out.mkdir(parents=True, exist_ok=True)
            for name, member in wanted.items():
                # ZipFile stops at the declared size, which check_zip capped.
                with archive.open(member) as src, open(out / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise UserError(ErrorCode.BAD_ARCHIVE, f"{WHAT} is not a valid zip archive.") from exc
    return HFFolder(out, config, architecture, task)


def _vet_members(members: list[zipfile.ZipInfo], root: str) -> dict[str, zipfile.ZipInfo]:
    wanted: dict[str, zipfile.ZipInfo] = {}
    for member in members:
        if member.is_dir():
            continue
        name = member.filename[len(root) :] if member.filename.startswith(root) else ""
        plain = name and "/" not in name and PurePosixPath(name).name == name
        text = plain and name.lower().endswith(TEXT_SUFFIXES) and name != WEIGHTS
        if not plain or not (name in MEMBERS or text):
            raise UserError(
                ErrorCode.UNSAFE_MODEL_FILE,
                f"{WHAT} may hold {CONFIG}, {WEIGHTS}, {TOKENIZER} and small text files "
                f"(tokenizer_config.json, vocab.txt, ...) only; {member.filename[:100]!r} is "
                "not one (weights are read from safetensors only: no .bin, .pt, .pkl or code).",
            )
        if name != WEIGHTS and member.file_size > MAX_TEXT_BYTES:
            raise UserError(
                ErrorCode.ARCHIVE_TOO_LARGE,
                f"{WHAT}: {name!r} is larger than {MAX_TEXT_BYTES} bytes.",
            )
        wanted[name] = member
    for name in (CONFIG, WEIGHTS):
        if name not in wanted:
            raise UserError(
                ErrorCode.BAD_TEACHER,
                f"{WHAT} has no {name}: zip the folder save_pretrained wrote "
                f"({CONFIG}, {WEIGHTS}, {TOKENIZER}).",
            )
    return wanted


def _read_config(archive: zipfile.ZipFile, wanted: dict[str, zipfile.ZipInfo]) -> dict[str, Any]:
    member = wanted[CONFIG]
    if member.file_size > MAX_CONFIG_BYTES:
        raise UserError(ErrorCode.BAD_TEACHER, f"{WHAT}'s {CONFIG} is larger than 1 MiB.")
    try:
        config = json.loads(archive.read(member).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(ErrorCode.BAD_TEACHER, f"{WHAT}'s {CONFIG} is not JSON.") from exc
    if not isinstance(config, dict):
        raise UserError(ErrorCode.BAD_TEACHER, f"{WHAT}'s {CONFIG} is not a JSON object.")
    return config


def _vet_config(config: dict[str, Any]) -> tuple[str, str]:
    asked = sorted(
        key for key in config if key in REFUSED_KEYS or str(key).startswith(REFUSED_PREFIXES)
    )
    if asked:
        raise UserError(
            ErrorCode.REMOTE_CODE,
            f"{WHAT}'s {CONFIG} sets {', '.join(asked)}: custom code and loading options are "
            "not run here; upload a model of a built-in architecture.",
        )
    architectures = config.get("architectures")
    if (
        not isinstance(architectures, list)
        or len(architectures) != 1
        or architectures[0] not in ARCHITECTURES
    ):
        shown = architectures if isinstance(architectures, list) else None
        raise UserError(
            ErrorCode.UNSUPPORTED_ARCHITECTURE,
            f"{WHAT}'s {CONFIG} names architectures {str(shown)[:200]}; one of "
            f"{', '.join(sorted(ARCHITECTURES))} is needed.",
        )
    return architectures[0], ARCHITECTURES[architectures[0]]


def _quiet_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return transformers


def load_model(folder: HFFolder) -> nn.Module:
    """The model, its class looked up by the vetted name: no Auto class, no remote code,
    safetensors only, every expected weight present."""
    transformers = _quiet_transformers()
    model_class = getattr(transformers, folder.architecture, None)
    if model_class is None:
        raise UserError(
            ErrorCode.UNSUPPORTED_ARCHITECTURE,
            f"This server's transformers has no {folder.architecture}.",
        )
    expected = getattr(model_class.config_class, "model_type", None)
    if expected and folder.config.get("model_type") != expected:
        raise UserError(
            ErrorCode.BAD_TEACHER,
            f"{WHAT}'s {CONFIG} has model_type {str(folder.config.get('model_type'))[:40]!r}; "
            f"{folder.architecture} is {expected!r}.",
        )
    try:
        model, info = model_class.from_pretrained(
            str(folder.path),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            output_loading_info=True,
            attn_implementation="eager",
            dtype=torch.float32,
        )
    except UserError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        if "mismatched" in str(exc):
            raise UserError(
                ErrorCode.BAD_TEACHER,
                f"{WHAT}'s {WEIGHTS} does not fit its {CONFIG}: weights of other shapes than "
                "the config describes (num_labels, hidden_size, vocab_size, ...).",
            ) from exc
        first = (text[0] if text else type(exc).__name__)[:200]
        raise UserError(
            ErrorCode.BAD_TEACHER, f"transformers could not load the model: {first}"
        ) from exc
    missing = sorted(info.get("missing_keys") or [])
    if missing or info.get("mismatched_keys"):
        shown = missing or sorted(str(k) for k in info["mismatched_keys"])
        raise UserError(
            ErrorCode.BAD_TEACHER,
            f"{WHAT}'s {WEIGHTS} lacks weights {folder.architecture} needs "
            f"({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}): a teacher is "
            "never initialised at random.",
        )
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    loaded: nn.Module = model
    return loaded


def input_names(model: nn.Module, task: str) -> list[str]:
    """``input_ids`` and ``attention_mask``, and ``token_type_ids`` for a classifier whose
    forward takes them and whose segment embedding has more than one row."""
    names = ["input_ids", "attention_mask"]
    config = getattr(model, "config", None)
    takes = "token_type_ids" in inspect.signature(model.forward).parameters
    if task == "classification" and takes and int(getattr(config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return names


class HFCall(nn.Module):
    """The model called with its inputs by name; ``{"logits": ...}`` out."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = dict(zip(self.names, inputs, strict=True))
        if "attention_mask" in feed:
            feed["attention_mask"] = feed["attention_mask"].long()
        out = self.model(**feed, return_dict=True)
        return {"logits": out.logits.float()}


def unpack_to_temp(path: str | Path, limits: ArchiveLimits | None = None) -> HFFolder:
    """Unpack into a private temporary folder (the sandbox's tmp); the caller removes
    ``folder.path.parent`` (``teachers.py`` ties it to the teacher's life)."""
    holder = Path(tempfile.mkdtemp(prefix="stillhouse-hf-"))
    try:
        return unpack(path, holder / "model", limits)
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
