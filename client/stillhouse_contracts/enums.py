"""Closed sets of names the job spec and the report use."""

from __future__ import annotations

from enum import StrEnum


class ExportFormat(StrEnum):
    TORCH_EXPORT = "torch_export"
    ONNX = "onnx"
    SAFETENSORS = "safetensors"
    ONNX_FP16 = "onnx_fp16"  # weights and activations in half precision, fp32 inputs/outputs
    ONNX_INT8 = "onnx_int8"  # static int8 (QDQ, per-channel weights), fp32 inputs/outputs
