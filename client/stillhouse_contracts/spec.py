"""The job spec: the body of ``POST /v1/jobs``, every default filled in.

Shared by the API (validation at submission, and the schema users see in ``/openapi.json``)
and the engine (its input). Closed choices only: the spec picks students and formats by
name, never by import path. Scalars are strict: ``"epochs": "5"`` is refused (422 naming
``training.epochs``), not read as 5.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from stillhouse_contracts.enums import ExportFormat

# A student is small by definition: 100 M weights is far past any CPU or single-GPU student.
MAX_HIDDEN_WEIGHTS = 100_000_000
# A sweep trains one student per combination, each a full training run: 3 × 3 × 3 at most.
MAX_SWEEP_CANDIDATES = 27
# Below this a float32 division by std overflows for ordinary inputs (1 / 1e-38 ~ 1e38).
STD_MIN = 1e-6

EXPORT_FORMATS: tuple[ExportFormat, ...] = tuple(ExportFormat)
ARCHITECTURES: tuple[str, ...] = (
    "auto",
    "mlp",
    "cnn",
    "cnn1d",
    "resnet",
    "mobilenetv2",
    "text_cnn",
    "transformer",
    "gpt",
)
Architecture = Literal[
    "auto", "mlp", "cnn", "cnn1d", "resnet", "mobilenetv2", "text_cnn", "transformer", "gpt"
]
SoftLabelMode = Literal["cached", "online"]
LossName = Literal["kd", "kd_jacobian", "reverse_kl", "jsd"]
# Language-model teachers: soft labels keep this many logits a token when top_k is unset.
LM_DEFAULT_TOP_K = 64


class _Strict(BaseModel):
    # NaN and Infinity are no numbers a spec can use (and not JSON): 422 naming the field.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StudentSpec(_Strict):
    architecture: Architecture = Field(
        default="auto", description="a name from GET /v1/students, or auto (picked by input rank)"
    )
    size_ratio: StrictFloat = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="target student parameters / teacher parameters (an auto or mlp student "
        "of feature vectors is at least 2 hidden units a class wide, where the teacher's size "
        "allows: the report's student_target_parameters)",
    )
    max_parameters: StrictInt | None = Field(
        default=None, ge=16, description="an absolute cap on parameters; wins over size_ratio"
    )
    hidden: list[Annotated[StrictInt, Field(ge=1, le=65536)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="mlp only: the hidden widths, e.g. [800, 800]; replaces auto sizing",
    )

    @model_validator(mode="after")
    def _hidden_is_mlp(self) -> StudentSpec:
        if self.hidden is not None and self.architecture != "mlp":
            raise ValueError('hidden is only valid with architecture "mlp"')
        if self.hidden is not None:
            between = sum(a * b for a, b in itertools.pairwise(self.hidden))
            if between > MAX_HIDDEN_WEIGHTS:
                raise ValueError(
                    f"hidden: {between:,} weights between the hidden layers alone; the most a "
                    f"student may have is {MAX_HIDDEN_WEIGHTS:,}"
                )
        return self


class DistillationSpec(_Strict):
    temperature: StrictFloat = Field(
        default=4.0, ge=1.0, le=100.0, description="softmax temperature of the soft targets"
    )
    alpha: StrictFloat = Field(
        default=0.1, ge=0.0, le=1.0, description="weight of the hard-label loss (with labels)"
    )
    soft_labels: SoftLabelMode = Field(
        default="cached", description="cached: the teacher runs once; online: every step"
    )
    loss: LossName = Field(
        default="kd",
        description="kd: soft targets (+ hard labels); kd_jacobian: also match the teacher's "
        "input gradients along random projections (needs .pt2 teachers); language models "
        "only: reverse_kl (KL(student || teacher)), jsd (generalized Jensen-Shannon, beta)",
    )
    beta: StrictFloat = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="jsd only: the mixture weight of the teacher, M = beta P + (1 - beta) Q",
    )
    jacobian_weight: StrictFloat = Field(
        default=1.0, ge=0.0, le=1000.0, description="kd_jacobian: weight of the derivative term"
    )
    top_k: StrictInt | None = Field(
        default=None,
        ge=1,
        description="keep only the teacher's top-k logits (default: all; language models: "
        "64 a token)",
    )


Temperature = Annotated[StrictFloat, Field(ge=1.0, le=100.0)]
Alpha = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
SizeRatio = Annotated[StrictFloat, Field(gt=0.0, le=1.0)]


class SweepSpec(_Strict):
    """Values to try; one student per combination, all from one soft-label pass. A field
    left out keeps the spec's single value (``distillation.temperature`` and so on)."""

    temperature: list[Temperature] | None = Field(default=None, min_length=1)
    alpha: list[Alpha] | None = Field(default=None, min_length=1)
    size_ratio: list[SizeRatio] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _few_enough(self) -> SweepSpec:
        for name in ("temperature", "alpha", "size_ratio"):
            values = getattr(self, name)
            if values is not None:
                setattr(self, name, list(dict.fromkeys(values)))
        count = self.combinations()
        if count > MAX_SWEEP_CANDIDATES:
            raise ValueError(
                f"{count} combinations; a sweep trains at most {MAX_SWEEP_CANDIDATES} students"
            )
        return self

    def combinations(self) -> int:
        return math.prod(len(v or [None]) for v in (self.temperature, self.alpha, self.size_ratio))


class PreprocessingSpec(_Strict):
    mean: list[StrictFloat] | None = Field(default=None, description="per channel, or one value")
    std: list[StrictFloat] | None = Field(default=None, description="per channel, or one value")

    @model_validator(mode="after")
    def _pairs(self) -> PreprocessingSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std) or not self.mean:
                raise ValueError("mean and std need the same non-zero length")
            if any(not s >= STD_MIN for s in self.std):
                raise ValueError(f"std must be at least {STD_MIN:g} (dividing by less overflows)")
        return self


# A request that leaves ``training.epochs`` out gets DEFAULT_EPOCHS, or more for a small
# transfer set: enough epochs for ``training.min_steps`` optimizer steps, at most
# MAX_SCHEDULED_EPOCHS (a student of 1,000 rows at batch 128 takes 9 steps an epoch: 180 steps
# in 20 epochs leave it short of a teacher that is not smooth, such as a tree ensemble). The
# cap is what a set of one batch needs for the default 600 steps: wine's 107 rows with a
# LightGBM teacher agreed 94.4 % at a cap of 200 epochs (200 steps), 97.2 % at 600.
DEFAULT_EPOCHS = 20
MAX_SCHEDULED_EPOCHS = 600
# ... and a small *tabular* transfer set also gets MUNGE at the paper's p (Bucila, Caruana and
# Niculescu-Mizil 2006): synthetic rows the teacher labels, which keep a long schedule from
# fitting the few real rows only (digits, 1,078 rows: a random forest's student at 67 epochs
# agrees 94.5 % without, 96.7 % with; docs/benchmarks.md, "MUNGE for tree teachers").
DEFAULT_MUNGE = 0.5


class TrainingSpec(_Strict):
    epochs: StrictInt = Field(
        default=DEFAULT_EPOCHS,
        ge=1,
        le=1000,
        description=f"passes over the transfer set; left out: {DEFAULT_EPOCHS}, or more for a "
        f"small transfer set (enough for min_steps optimizer steps, at most "
        f"{MAX_SCHEDULED_EPOCHS} epochs); the job's spec shows the number chosen",
    )
    min_steps: StrictInt = Field(
        default=600,
        ge=0,
        le=1_000_000,
        description="when epochs is left out: the fewest optimizer steps training takes (small "
        "transfer sets get more epochs); 0: always the default epochs",
    )
    batch_size: StrictInt = Field(default=128, ge=1, le=65536)
    learning_rate: StrictFloat = Field(default=1e-3, gt=0.0, le=10.0)
    seed: StrictInt = Field(default=0, ge=0, le=2**31 - 1)
    weight_decay: StrictFloat = Field(default=0.0, ge=0.0, le=1.0)
    warmup_fraction: StrictFloat = Field(default=0.05, ge=0.0, le=0.5)
    eval_fraction: StrictFloat = Field(
        default=0.1, gt=0.0, lt=0.9, description="held-out split when no eval set is given"
    )

    def scheduled_epochs(self, train_rows: int) -> int:
        """The epochs a request that left ``epochs`` out trains for on ``train_rows`` rows."""
        steps_per_epoch = max(1, math.ceil(train_rows / self.batch_size))
        wanted = math.ceil(self.min_steps / steps_per_epoch)
        return min(MAX_SCHEDULED_EPOCHS, max(DEFAULT_EPOCHS, wanted))


class AugmentationSpec(_Strict):
    """Applied to each training batch, seeded by (seed, epoch, batch); the teacher then runs
    online on exactly the augmented batch."""

    shift: StrictInt = Field(
        default=0, ge=0, le=64, description="random shifts of up to this many pixels (images)"
    )
    flip: StrictBool = Field(default=False, description="random horizontal flips (images)")
    mixup: StrictFloat = Field(
        default=0.0, ge=0.0, le=10.0, description="mixup's Beta(a, a) parameter; 0: off"
    )
    noise: StrictFloat = Field(
        default=0.0, ge=0.0, le=10.0, description="std of added Gaussian noise (input units)"
    )
    munge: StrictFloat = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="MUNGE (tabular samples): each batch also holds a synthetic copy of every "
        "row, each attribute swapped with probability p for its nearest neighbour's; 0: off. "
        "A request that leaves epochs and augmentation out on a small tabular transfer set "
        f"gets {DEFAULT_MUNGE}",
    )
    munge_scale: StrictFloat = Field(
        default=10.0,
        gt=0.0,
        le=1000.0,
        description="MUNGE's s: a swapped value is perturbed by N(0, |a - b| / s)",
    )

    @property
    def active(self) -> bool:
        return bool(self.shift or self.flip or self.mixup or self.noise or self.munge)


class ExportSpec(_Strict):
    formats: list[ExportFormat] | None = Field(
        default=None,
        min_length=1,
        description="the formats to make (the same list as export_formats; default: all)",
    )
    agreement_margin: StrictFloat = Field(
        default=0.005,
        ge=0.0,
        le=1.0,
        description="a variant (onnx_fp16, onnx_int8) whose agreement with the teacher is more "
        "than this below the fp32 student's is still offered; the report flags it",
    )
    calibration_samples: StrictInt = Field(
        default=256, ge=1, le=4096, description="transfer samples that calibrate onnx_int8"
    )


class JobSpec(_Strict):
    """A distillation job. Every field but ``teacher_ids`` and ``dataset_id`` has a default."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "teacher_ids": ["tch_..."],
                    "dataset_id": "ds_...",
                    "eval_dataset_id": None,
                    "training": {"epochs": 20, "batch_size": 128},
                }
            ]
        },
    )

    teacher_ids: list[StrictStr] = Field(
        min_length=1, max_length=8, description="several = an ensemble (probabilities averaged)"
    )
    dataset_id: StrictStr = Field(description="the transfer set; its labels feed the hard loss")
    eval_dataset_id: StrictStr | None = Field(
        default=None, description="held-out set for the report; default: a held-out split"
    )
    student: StudentSpec = StudentSpec()
    distillation: DistillationSpec = DistillationSpec()
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    training: TrainingSpec = TrainingSpec()
    augmentation: AugmentationSpec = AugmentationSpec()
    export_formats: list[ExportFormat] = Field(
        default_factory=lambda: list(EXPORT_FORMATS), min_length=1
    )
    export: ExportSpec = Field(
        default_factory=ExportSpec,
        description="what is made besides the student: formats and the variants' settings",
    )
    sweep: SweepSpec | None = Field(
        default=None,
        description="train one student per combination of these values from one soft-label "
        "pass; the report lists them as candidates and names the chosen one",
    )
    baseline: StrictBool = Field(
        default=False,
        description="also train the same student on the hard labels alone (the transfer set "
        "needs labels), so the report states what distillation bought",
    )

    @model_validator(mode="after")
    def _unique_formats(self) -> JobSpec:
        asked = self.export.formats
        if asked is not None and asked != self.export_formats:
            if "export_formats" in self.model_fields_set:
                raise ValueError("export.formats and export_formats differ: give one of them")
            self.export_formats = asked
        self.export_formats = list(dict.fromkeys(self.export_formats))
        self.export.formats = self.export_formats
        return self

    def scheduled(self, transfer_rows: int, *, tabular: bool = False) -> JobSpec:
        """This spec with ``training.epochs`` chosen for a transfer set of ``transfer_rows``
        when the request left it out (see ``TrainingSpec.scheduled_epochs``); as it is when
        the request gave it. Without an eval set the student trains on what the held-out
        split leaves. When that set is small (more than the default epochs) and ``tabular``
        (samples are ``[D]`` vectors), a request that left augmentation, the loss, the
        soft-label mode and sweeps alone also gets MUNGE at ``DEFAULT_MUNGE``."""
        training = self.training
        if "epochs" in training.model_fields_set:
            return self
        rows = transfer_rows
        if self.eval_dataset_id is None:
            rows -= max(1, round(training.eval_fraction * transfer_rows))
        epochs = training.scheduled_epochs(max(1, rows))
        update: dict[str, BaseModel] = {"training": training.model_copy(update={"epochs": epochs})}
        if tabular and epochs > DEFAULT_EPOCHS and self._teaching_left_out():
            update["augmentation"] = self.augmentation.model_copy(update={"munge": DEFAULT_MUNGE})
        return self.model_copy(update=update)

    def _teaching_left_out(self) -> bool:
        """The request chose no augmentation, loss, soft-label mode or sweep."""
        chosen = {"soft_labels", "loss"} & self.distillation.model_fields_set
        return not self.augmentation.model_fields_set and not chosen and self.sweep is None

    @property
    def soft_label_mode(self) -> SoftLabelMode:
        """How soft labels are obtained: online whenever the teacher must see each training
        batch as the student does (augmented inputs) or give its input gradients."""
        if self.augmentation.active or self.distillation.loss == "kd_jacobian":
            return "online"
        return self.distillation.soft_labels
