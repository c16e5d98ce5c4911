"""A tiny text classifier trained in seconds on synthetic token sequences, exported as an
ONNX file (dynamo, named inputs ``input_ids`` and ``attention_mask``, dynamic batch and
sequence) and a ``.pt2`` that returns a dict with ``logits``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB, LENGTH, CLASSES = 60, 12, 3


class TinyTextClassifier(nn.Module):
    """Embedding, masked mean pool, linear: a bag of words with a learned table."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 32)
        self.hidden = nn.Linear(32, 64)
        self.head = nn.Linear(64, CLASSES)
        self.as_dict = as_dict

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        keep = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        logits = self.head(torch.relu(self.hidden(pooled)))
        return {"logits": logits, "pooled": pooled} if self.as_dict else logits


def token_set(n: int, seed: int) -> dict[str, np.ndarray]:
    """Class c favours ids in the c-th third of the vocabulary; lengths vary, padded with 0."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    ids = rng.integers(1, VOCAB, (n, LENGTH))
    band = VOCAB // CLASSES
    favoured = 1 + labels[:, None] * band + rng.integers(0, band - 1, (n, LENGTH))
    ids = np.where(rng.random((n, LENGTH)) < 0.5, favoured, ids)
    lengths = rng.integers(4, LENGTH + 1, n)
    mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": (ids * mask).astype(np.int64), "attention_mask": mask, "label": labels}


def train_teacher(seed: int = 0, as_dict: bool = False) -> TinyTextClassifier:
    data = token_set(1200, seed)
    torch.manual_seed(seed)
    model = TinyTextClassifier(as_dict)
    ids, mask = torch.from_numpy(data["input_ids"]), torch.from_numpy(data["attention_mask"])
    y = torch.from_numpy(data["label"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        out = model(ids, mask)
        logits = out["logits"] if isinstance(out, dict) else out
        loss = nn.functional.cross_entropy(logits, y)  # type: ignore[arg-type]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _example() -> tuple[torch.Tensor, torch.Tensor]:
    data = token_set(4, 99)
    return torch.from_numpy(data["input_ids"]), torch.from_numpy(data["attention_mask"])


def _dynamic() -> dict[str, object]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=2, max=512)
    return {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}


Example = tuple[torch.Tensor, torch.Tensor]


def export_onnx(model: nn.Module, path: Path, example: Example | None = None) -> Path:
    """``model`` as ONNX with int64 ``input_ids``/``attention_mask`` (dynamic batch and
    sequence) and a ``logits`` output, traced on ``example`` (default: a token batch)."""
    from engine.export import _quiet_exporter

    with _quiet_exporter():
        torch.onnx.export(
            model,
            example or _example(),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_shapes=_dynamic(),
            dynamo=True,
            verbose=False,
            external_data=False,
        )
    return path


def export_pt2(model: nn.Module, path: Path, example: Example | None = None) -> Path:
    program = torch.export.export(model, example or _example(), dynamic_shapes=_dynamic())
    torch.export.save(program, path)
    return path


def save_npz(path: Path, data: dict[str, np.ndarray], *names: str) -> Path:
    np.savez(path, **{name: data[name] for name in names})
    return path


def tokenizer_json(vocab: int = VOCAB) -> str:
    """A word-level tokenizer.json of ``vocab`` tokens, built with the tokenizers library:
    [PAD] is 0 (the padding id of the token sets), [UNK] 1, then words w2, w3, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, vocab)}}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_truncation(LENGTH)
    return str(tokenizer.to_str())


def jsonl_text(data: dict[str, np.ndarray], path: Path) -> Path:
    """The token set as JSON Lines of words w<id> (the word-level tokenizer's vocabulary),
    with labels: tokenized back, the same ids."""
    import json

    with open(path, "w") as file:
        for ids, mask, label in zip(
            data["input_ids"], data["attention_mask"], data["label"], strict=True
        ):
            words = " ".join(f"w{i}" for i, m in zip(ids, mask, strict=True) if m)
            file.write(json.dumps({"text": words, "label": int(label)}) + "\n")
    return path


def hf_folder(
    folder: Path,
    *,
    seed: int = 0,
    config: dict[str, object] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A tiny BertForSequenceClassification (random init, about 100 k parameters) saved by
    save_pretrained (safetensors) with a tokenizer.json of the test vocabulary and a
    tokenizer_config.json, zipped as a user zips the folder (inside one directory).
    ``config`` overrides config.json's keys; ``extra`` adds members."""
    import json
    import zipfile

    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    model_config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=CLASSES,
    )
    saved = folder / "model"
    BertForSequenceClassification(model_config).eval().save_pretrained(saved)
    (saved / "tokenizer.json").write_text(tokenizer_json())
    (saved / "tokenizer_config.json").write_text(json.dumps({"model_max_length": LENGTH}))
    if config:
        merged = {**json.loads((saved / "config.json").read_text()), **config}
        (saved / "config.json").write_text(json.dumps(merged))
    path = folder / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member in sorted(saved.iterdir()):
            archive.write(member, f"my-model/{member.name}")
        for name, data in (extra or {}).items():
            archive.writestr(f"my-model/{name}", data)
    return path
