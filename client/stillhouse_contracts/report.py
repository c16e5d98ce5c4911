"""What a finished job measured, and its epochs: the engine writes these, the API answers
with them (``GET /v1/jobs/{id}``, ``/metrics``) and the SDK reads them, one class each."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from stillhouse_contracts.enums import ExportFormat
from stillhouse_contracts.spec import AugmentationSpec, LossName, SoftLabelMode


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Fields named here are typed; a newer engine may add more, which pass through."""

    model_config = ConfigDict(extra="allow")


class ModelMeasure(_Open):
    parameters: int | None = Field(description="None when a teacher's count is unknown")
    size_bytes_fp32: int | None
    size_bytes_fp16: int | None
    latency_ms_batch1: float
    throughput_per_s: float
    runtime: str | None = None
    file_bytes: dict[str, int] | None = None
    latency_ms_per_token: float | None = Field(
        default=None,
        description="language models: latency_ms_batch1 over the sequence_length tokens of "
        "the timed sequence (one forward pass over the whole sequence)",
    )
    tokens_per_s: float | None = Field(
        default=None,
        description="language models: throughput_per_s x sequence_length (padded tokens)",
    )


class SpeedupSpread(_Open):
    """Teacher and student timed interleaved, in short rounds: the rounds' speedups."""

    median: float
    min: float
    max: float
    iqr_relative: float = Field(description="interquartile range / median")
    rounds: int
    clock: str | None = Field(
        default=None,
        description="thread_cpu: torch on one thread, timed by its CPU time (a busy machine "
        "does not change it); wall: wall time (ONNX Runtime, GPUs)",
    )
    threads: int | None = Field(default=None, description="CPU threads of both models")
    wall_over_cpu: float | None = Field(
        default=None, description="thread_cpu only: the calls' wall time over their CPU time"
    )
    disturbed: bool = Field(
        description="iqr_relative past 0.25 (a load came and went), or wall_over_cpu past "
        "1.25 (the machine was busy; CPU time kept the figures)"
    )


class Variant(_Open):
    """One downloadable file of the student, measured as a user runs it on the worker's CPU
    (ONNX Runtime for the ONNX files), on the same eval samples as the student."""

    format: ExportFormat
    size_bytes: int
    latency_ms_batch1: float
    throughput_per_s: float = Field(description="samples a second at throughput_batch")
    throughput_batch: int | None = None
    runtime: str | None = None
    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float | None = None
    agreement_loss: float | None = Field(
        default=None, description="fp32 ONNX agreement minus this one's (variants only)"
    )
    within_margin: bool | None = Field(
        default=None, description="agreement_loss at most export.agreement_margin"
    )


class Candidate(_Open):
    """One student of a sweep: its spec values and what it measured on the eval set."""

    index: int = Field(ge=0, description="GET /v1/jobs/{id}/student?candidate=index")
    temperature: float
    alpha: float
    size_ratio: float
    parameters: int
    latency_ms_batch1: float
    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float
    variants: list[Variant] | None = Field(
        default=None, description="this candidate's files, measured as the top level's are"
    )
    pareto: bool | None = Field(
        default=None,
        description="on the Pareto front: no other candidate has as few or fewer parameters, "
        "as low or lower latency and as much or more agreement and accuracy, better in one",
    )


class Baseline(_Open):
    """The chosen student's architecture and size trained on the hard labels alone."""

    parameters: int
    latency_ms_batch1: float
    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float


class DistillationGain(_Open):
    """The distilled student's number minus the baseline's."""

    agreement_top1: float
    student_accuracy: float | None
    kl_divergence: float


class Report(_Open):
    """Sizes, speed, agreement and timings of a finished job (stored with the job)."""

    teacher: ModelMeasure
    student: ModelMeasure
    compression_ratio: float | None = Field(description="teacher / student parameters")
    speedup: float = Field(
        description="student throughput / teacher throughput: the median of interleaved rounds"
    )
    speedup_spread: SpeedupSpread | None = Field(
        default=None, description="the rounds behind speedup, and whether a load disturbed them"
    )
    agreement_top1: float
    agreement_top5: float | None = None
    kl_divergence: float = Field(description="mean KL(teacher || student) at T=1, eval set")
    teacher_accuracy: float | None
    student_accuracy: float | None
    eval_samples: int
    device: str
    device_name: str | None = Field(default=None, description="the GPU's or the CPU's model")
    soft_labels: SoftLabelMode
    loss: LossName | None = Field(default=None, description="the distillation loss that ran")
    jacobian_weight: float | None = Field(default=None, description="kd_jacobian only")
    augmentation: AugmentationSpec | None = Field(
        default=None, description="the augmentation applied (None: none)"
    )
    timings_s: dict[str, float]
    sequence_length: int | None = Field(
        default=None,
        description="token teachers: the tokens a sample the latency and throughput were "
        "measured at (the dataset's padded length)",
    )
    metrics_source: ExportFormat | None = None
    student_files: dict[str, str] | None = Field(default=None, description="format → sha256")
    variants: list[Variant] | None = Field(
        default=None,
        description="every downloadable format: size, speed, agreement with the teacher",
    )
    candidates: list[Candidate] | None = Field(
        default=None, description="a sweep's students, by index; the top level is the chosen one"
    )
    chosen: int | None = Field(
        default=None,
        description="the best eval agreement, or the smallest candidate within 0.5 point of it",
    )
    baseline: Baseline | None = Field(default=None, description="with baseline: true")
    distillation_gain: DistillationGain | None = None
    # Language models (task "language_model"): agreement_top1 is next_token_agreement,
    # kl_divergence is kl_per_token, the accuracies are next-token accuracy on the data.
    task: str | None = Field(
        default=None, description="language_model for a language-model teacher, else None"
    )
    teacher_perplexity: float | None = Field(
        default=None,
        description="language models: exp of the teacher's mean next-token cross-entropy on "
        "the eval set's real tokens",
    )
    student_perplexity: float | None = Field(
        default=None,
        description="language models: the same for the downloaded student (metrics_source)",
    )
    next_token_agreement: float | None = Field(
        default=None,
        description="language models: share of the eval set's real tokens where the "
        "student's top-1 next token is the teacher's",
    )
    kl_per_token: float | None = Field(
        default=None,
        description="language models: mean KL(teacher || student) at T=1 over real tokens",
    )
    eval_tokens: int | None = Field(
        default=None, description="language models: real tokens (attention_mask 1) evaluated"
    )
    eval_predicted_tokens: int | None = Field(
        default=None,
        description="language models: real tokens followed by a real token (perplexity's)",
    )
    top_k: int | None = Field(
        default=None, description="language models: teacher logits kept a token"
    )
    beta: float | None = Field(default=None, description="jsd only: the mixture weight")


class EpochRecord(_Closed):
    """One finished epoch (``GET /v1/jobs/{id}/metrics``)."""

    epoch: int = Field(ge=1)
    train_loss: float | None
    soft_loss: float | None
    hard_loss: float | None = Field(description="None without labels")
    eval_agreement: float | None
    learning_rate: float | None
    seconds: float
