"""The job spec: the body of ``POST /v1/jobs`` with every default filled in (API.md, "Jobs").

Shared by the API (validation at submission) and the worker (the engine's input). Closed
choices only: the spec picks students and formats by name, never by import path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ExportFormat = Literal["torch_export", "onnx", "safetensors"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("torch_export", "onnx", "safetensors")
ARCHITECTURES: tuple[str, ...] = ("auto", "mlp", "cnn", "cnn1d", "resnet", "mobilenetv2")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentSpec(_Strict):
    architecture: Literal["auto", "mlp", "cnn", "cnn1d", "resnet", "mobilenetv2"] = "auto"
    size_ratio: float = Field(default=0.1, gt=0.0, le=1.0)
    max_parameters: int | None = Field(default=None, ge=16)
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="mlp only: the hidden widths, e.g. [800, 800]; replaces auto sizing",
    )

    @model_validator(mode="after")
    def _hidden_is_mlp(self) -> StudentSpec:
        if self.hidden is not None and self.architecture != "mlp":
            raise ValueError('hidden is only valid with architecture "mlp"')
        return self


class DistillationSpec(_Strict):
    temperature: float = Field(default=4.0, ge=1.0, le=100.0)
    alpha: float = Field(default=0.1, ge=0.0, le=1.0)
    soft_labels: Literal["cached", "online"] = "cached"
    loss: Literal["kd"] = "kd"
    top_k: int | None = Field(
        default=None, ge=1, description="keep only the teacher's top-k logits (default: all)"
    )


class PreprocessingSpec(_Strict):
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _pairs(self) -> PreprocessingSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or not self.mean:
                raise ValueError("mean and std need the same non-zero length")
            if any(s <= 0 for s in self.std):
                raise ValueError("std must be positive")
        return self


class TrainingSpec(_Strict):
    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    warmup_fraction: float = Field(default=0.05, ge=0.0, le=0.5)
    eval_fraction: float = Field(
        default=0.1, gt=0.0, lt=0.9, description="held-out split when no eval set is given"
    )


class JobSpec(_Strict):
    teacher_ids: list[str] = Field(min_length=1, max_length=8)
    dataset_id: str
    eval_dataset_id: str | None = None
    student: StudentSpec = StudentSpec()
    distillation: DistillationSpec = DistillationSpec()
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    training: TrainingSpec = TrainingSpec()
    export_formats: list[ExportFormat] = Field(
        default_factory=lambda: list(EXPORT_FORMATS), min_length=1
    )

    @model_validator(mode="after")
    def _unique_formats(self) -> JobSpec:
        self.export_formats = list(dict.fromkeys(self.export_formats))
        return self
