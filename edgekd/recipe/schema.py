"""The recipe schema: one typed object per YAML section, validated when the recipe is loaded.

Why pydantic with ``extra="forbid"`` everywhere: a misspelled key must fail at load time with the key path and
a suggestion, not be silently ignored until a two-hour run has produced the wrong model. Nothing downstream reads
raw dicts; stages receive these objects.

Names that refer to registered components (task, dataset, model, importance, loss, target) are checked against
their registries by :func:`edgekd.recipe.load.check_registered_names` right after parsing, so the JSON schema
stays importable without torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.recipe.base import OptimConfig, Section
from edgekd.recipe.data_free import DataFreeConfig
from edgekd.recipe.gates import GatesConfig
from edgekd.recipe.prune import PruneConfig
from edgekd.registry import did_you_mean
from edgekd.rundir import FP16_ONNX, INT8_ONNX, STUDENT_ONNX

Fraction = float  # documented alias: values in (0, 1)
# Recipe keys that are permissions, not inputs: they change what edgekd may do, never what it computes, so a
# resumed run may change them and no stage's resume hash covers them.
PERMISSIONS = ("teacher.trust_checkpoint",)
# `device`: where training runs (edgekd.engine.device resolves it; syntax only here, availability at start-up).
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
# Training precision: autocast dtype around the forward passes (losses stay float32); fp16 needs CUDA.
Precision = Literal["fp32", "bf16", "fp16"]
# Default validation split: 10% of the training split, at most VAL_FRACTION_CAP samples (enough to rank epochs
# to ~0.4 pt on accuracy; more would only take training images away).
DEFAULT_VAL_FRACTION = 0.1
VAL_FRACTION_CAP = 5000
# `data.preprocessing` presets (values in edgekd.data.preprocessing); null picks one from the teacher and data.
PreprocessingPreset = Literal["imagenet", "none", "measured"]
PREPROCESSING_PRESETS: tuple[str, ...] = get_args(PreprocessingPreset)
# Where a run's mean/std came from: a named preset, the recipe's own numbers, a bounded measurement of the
# training split, the teacher's published normalisation (torchvision/timm), or the shipped dataset's own.
PreprocessingSource = Literal["preset", "declared", "measured", "teacher", "dataset"]


class PreprocessingSpec(Section):
    """Normalisation ``x = (pixel / 255 - mean) / std``: one value per input channel, or one for all channels.

    ``source``/``detail`` are written by edgekd: the resolved recipe a run records (report.json ``recipe``,
    ``student.pt``) holds the numbers it used and where they came from, so re-exporting the student later feeds
    it the same numbers and says why. A recipe that declares values leaves them out (``source: declared``).
    """

    mean: tuple[float, ...] = Field(..., min_length=1, description="Per-channel mean of pixel/255.")
    std: tuple[float, ...] = Field(..., min_length=1, description="Per-channel std of pixel/255 (> 0).")
    source: PreprocessingSource = Field("declared", description="Where the values came from (set by edgekd).")
    detail: str = Field("", description="How they were chosen, in words (set by edgekd).")

    @model_validator(mode="after")
    def _per_channel(self) -> PreprocessingSpec:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean has {len(self.mean)} values but std has {len(self.std)}; give one per channel"
            )
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {list(self.std)}")
        return self


def _preprocessing_values(value: dict[str, Any]) -> PreprocessingSpec:
    """``{mean, std}`` as a :class:`PreprocessingSpec`; a problem as one ValueError naming the inner key."""
    keys = sorted(PreprocessingSpec.model_fields)
    for key in value:
        if str(key) not in keys:
            raise ValueError(f"unknown key '{key}'{did_you_mean(str(key), keys)} (valid: {', '.join(keys)})")
    try:
        return PreprocessingSpec.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(
            f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}"
        ) from None


class DataConfig(Section):
    """Where the data comes from and how it is batched.

    ``eval`` is the held-out test split, evaluated once per artifact; ``val`` is carved from the training split
    and is the only split that selects anything (best epoch, automatic choices), so test numbers stay unbiased.
    """

    name: str = Field("fashion_mnist", description="Registered dataset name (see `edgekd schema`).")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Dataset-specific options, passed to the dataset's builder."
    )
    root: Path | None = Field(None, description="Directory holding the dataset files; searched first.")
    download: bool = Field(False, description="Download (with checksum verification) when not found locally.")
    train_limit: int | None = Field(None, ge=1, description="Use only the first N training samples.")
    eval_limit: int | None = Field(None, ge=1, description="Use only the first N evaluation samples.")
    val: float | int | str | None = Field(
        DEFAULT_VAL_FRACTION,
        description=(
            "Validation split for model selection, carved from the training split with the run's seed: a "
            f"fraction in (0, 1) (at most {VAL_FRACTION_CAP} samples), a sample count, a directory (folder "
            "datasets: a subfolder laid out like the eval one), or 0/null for none (the last epoch is kept)."
        ),
    )
    val_seed: int | None = Field(
        None,
        description="Carve data.val with this seed instead of the run's: the same validation images for every "
        "seed, e.g. the images a teacher was trained without, so that they are unseen by it as well.",
    )
    augment: bool = Field(
        True, description="Standard training augmentation (random crop with padding, flip)."
    )
    batch_size: int = Field(128, ge=1, description="Global batch per training step (split over all ranks).")
    eval_batch_size: int = Field(512, ge=1)
    workers: int = Field(
        0, ge=0, description="DataLoader worker processes decoding streamed folder datasets (0: in-process)."
    )
    preprocessing: PreprocessingPreset | PreprocessingSpec | None = Field(
        None,
        description=(
            "Input normalisation: a preset (imagenet, none, measured: mean/std of a bounded sample of the "
            "training split) or {mean: [...], std: [...]}; null: a torchvision:/timm: teacher's published "
            "normalisation, else the shipped dataset's own, else measured."
        ),
    )

    @field_validator("preprocessing", mode="before")
    @classmethod
    def _known_preset(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in PREPROCESSING_PRESETS:
            raise ValueError(
                f"unknown preset '{value}'{did_you_mean(value, PREPROCESSING_PRESETS)} (presets: "
                f"{', '.join(PREPROCESSING_PRESETS)}; or give {{mean: [...], std: [...]}})"
            )
        if isinstance(value, dict):  # validated here, so an error names the key, not the union's branches
            return _preprocessing_values(value)
        if value is not None and not isinstance(value, str | PreprocessingSpec):
            raise ValueError(
                f"give a preset ({', '.join(PREPROCESSING_PRESETS)}) or {{mean: [...], std: [...]}}"
            )
        return value

    @field_validator("val")
    @classmethod
    def _val_in_range(cls, value: float | int | str | None) -> float | int | str | None:
        if isinstance(value, bool):
            raise ValueError("give a fraction in (0, 1), a sample count, a directory, or 0/null for none")
        if isinstance(value, float) and not 0.0 <= value < 1.0:
            raise ValueError(f"a fraction must be in (0, 1), got {value}; give a count as an integer")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"a sample count must be >= 0, got {value}")
        return value


class ModelSpec(Section):
    """A model builder: a registered name (``resnet20``), ``torchvision:<name>`` or ``package.module:factory``.

    ``package.module:factory`` imports user code because the recipe names it: only run recipes you trust.
    """

    name: str = Field(..., description="resnet20 | torchvision:resnet18 | my_pkg.models:build")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the builder.")
    num_classes: int | None = Field(None, ge=1, description="Output classes; default: from the dataset.")
    in_channels: int | None = Field(None, ge=1, description="Input channels; default: from the dataset.")


class TeacherConfig(Section):
    model: ModelSpec
    checkpoint: Path | None = Field(None, description="State dict (plain or under 'state_dict'/'model').")
    trust_checkpoint: bool = Field(
        False,
        description="Allow full unpickling of the checkpoint (runs code from the file: trusted files only).",
    )


class TrainConfig(OptimConfig):
    """``edgekd train``: trains the teacher from scratch (or from ``teacher.checkpoint`` when given)."""

    epochs: int = Field(15, ge=1)
    lr: float = Field(0.1, gt=0)
    precision: Precision = Field(
        "fp32", description="fp32, or bf16/fp16 autocast on the training device (fp16: CUDA only)."
    )


class LossSpec(BaseModel):
    """One distillation loss term. Its own parameters sit beside ``name`` and ``weight``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    weight: float = Field(1.0, ge=0)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _default_losses() -> list[LossSpec]:
    return [LossSpec(name="ce", weight=0.1), LossSpec(name="kd", weight=0.9, temperature=4.0)]


def _unique_loss_names(losses: list[LossSpec]) -> list[LossSpec]:
    seen: set[str] = set()
    for spec in losses:
        if spec.name in seen:
            raise ValueError(f"loss '{spec.name}' is listed twice; combine its weights into one entry")
        seen.add(spec.name)
    return losses


class DistillPhase(OptimConfig):
    """One phase of a multi-phase distillation: its own losses, epochs and optimizer (thesis 003, MSKD-SSR).

    A fresh optimizer and schedule start each phase from the previous phase's best student. ``self_review``
    adds a frozen copy of that student as one more teacher (after the recipe's), so the student's own earlier
    best also teaches.
    """

    name: str = Field("", description="Label in logs and the report (default: phase<N>).")
    epochs: int = Field(1, ge=1)
    lr: float = Field(0.02, gt=0)
    losses: list[LossSpec] = Field(..., min_length=1)
    self_review: bool = Field(False, description="The previous phases' best student also teaches.")

    _unique = field_validator("losses")(_unique_loss_names)


class DistillConfig(OptimConfig):
    """Recovery training of the pruned student, taught by the frozen unpruned teacher."""

    epochs: int = Field(3, ge=0)
    lr: float = Field(0.02, gt=0)
    losses: list[LossSpec] = Field(default_factory=_default_losses, min_length=1)
    extra_teachers: list[TeacherConfig] = Field(
        default_factory=list,
        description="More frozen teachers beside the unpruned original (teacher.*), e.g. other checkpoints. "
        "Losses that read several teachers (multi_teacher) see the original first, then these in order; "
        "single-teacher losses use the original.",
    )
    phases: list[DistillPhase] = Field(
        default_factory=list,
        description="Multi-phase distillation, run in order (e.g. hints, then logits, then self-review). When "
        "given, each phase's own epochs/losses/optimizer are used instead of this section's.",
    )
    teacher_cache_mib: float = Field(
        1024.0,
        ge=0,
        description="Without data.augment, compute the teachers' outputs (and hooked features) once and reuse "
        "them every epoch when they fit in this many MiB; 0 runs the teachers every step.",
    )
    fuse_teacher: bool = Field(
        True,
        description="Run the frozen teachers as BatchNorm-folded, channels_last copies (same outputs up to "
        "float rounding; skipped when a loss hooks teacher modules or a teacher is not torch.fx-traceable).",
    )
    precision: Precision = Field(
        "fp32",
        description="fp32, or bf16/fp16 autocast around the forward passes on the training device; the losses "
        "(softmax, KL) are computed in float32. fp16 needs CUDA (it adds a GradScaler); bf16 also runs on CPUs.",
    )
    compile: bool = Field(False, description="torch.compile the student's training forward (slow start).")
    data_free: DataFreeConfig | None = Field(
        None,
        description="Distil from batches synthesised from the teacher instead of the training split "
        "(edgekd/distill/data_free): true for the defaults, or {method, steps_per_epoch, ...}.",
    )

    _unique = field_validator("losses")(_unique_loss_names)
    _data_free = field_validator("data_free", mode="before")(lambda v: _enabled_section(v))

    @model_validator(mode="after")
    def _data_free_is_one_phase(self) -> DistillConfig:
        if self.data_free is not None and self.phases:
            raise ValueError("distill.data_free runs one phase: remove distill.phases or distill.data_free")
        return self

    def loss_lists(self) -> list[tuple[str, list[LossSpec]]]:
        """``(key path, losses)`` of every loss list that will train (the phases', else this section's)."""
        if self.phases:
            return [(f"distill.phases.{i}.losses", p.losses) for i, p in enumerate(self.phases)]
        return [("distill.losses", self.losses)]


def _enabled_section(value: Any) -> Any:
    """``true`` means the section with its defaults, ``false`` (or absent) means off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


class Int8Config(Section):
    """``export.int8``: static INT8 (QDQ, per-channel S8 weights, U8 activations) with ONNX Runtime."""

    calibration_samples: int = Field(
        256, ge=1, description="Training images that calibrate activation ranges."
    )
    preprocess: bool = Field(True, description="Run ORT's quant_pre_process before quantizing.")
    reduce_range: bool | None = Field(
        None,
        description="7-bit weights. null (auto): on when this machine is x86 without VNNI, whose U8S8 kernels "
        "saturate (parity and metrics are measured here); off on ARM and VNNI CPUs.",
    )
    min_agreement: float = Field(
        0.97, gt=0, le=1, description="Parity: smallest top-1 (or pixel) agreement with the FP32 student."
    )


class Fp16Config(Section):
    """``export.fp16``: FP16 weights and activations with FP32 input/output (for GPU targets)."""

    atol: float = Field(0.1, gt=0, description="Parity: largest |PyTorch - ORT| on outputs.")
    min_agreement: float = Field(0.99, gt=0, le=1, description="Parity: smallest prediction agreement.")


class ExportConfig(Section):
    opset: int = Field(18, ge=17, le=23)
    simplify: bool = Field(True, description="Run onnxsim; on failure the unsimplified model is kept.")
    dynamic_batch: bool = True
    parity_samples: int = Field(256, ge=1, description="Real eval inputs compared PyTorch vs ONNX Runtime.")
    parity_atol: float = Field(1e-3, gt=0, description="Max |PyTorch - ORT| on outputs for parity to pass.")
    parity_min_agreement: float = Field(0.99, gt=0, le=1, description="Min top-1 (or pixel) agreement.")
    int8: Int8Config | None = Field(
        None, description="Also ship student.int8.onnx: true, false, or settings (see Int8Config)."
    )
    fp16: Fp16Config | None = Field(
        None, description="Also ship student.fp16.onnx: true, false, or settings (see Fp16Config)."
    )
    precision_tolerance: float = Field(
        0.01,
        ge=0,
        description="With int8/fp16: the report recommends, per target, the fastest student file whose "
        "primary metric is at most this much (relative: 0.01 = 1%) worse than the FP32 student's.",
    )

    _precisions = field_validator("int8", "fp16", mode="before")(_enabled_section)


class ProfileConfig(Section):
    targets: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    threads: list[int] = Field(default_factory=lambda: [1, 0], min_length=1, description="0 means all cores.")
    batch: int = Field(1, ge=1)
    warmup: int = Field(5, ge=0)
    runs: int | None = Field(None, ge=1, description="Fixed run count; default: adapt to time_budget_s.")
    time_budget_s: float = Field(
        3.0, gt=0, description="Per-configuration measuring time when runs is unset."
    )
    min_runs: int = Field(10, ge=1, description="Adaptive: at least this many runs, even past the budget.")
    min_time_s: float | None = Field(
        None,
        ge=0,
        description="Adaptive: measure at least this long before stopping on ci_target, so p99 has enough "
        "samples (capped at time_budget_s). Default: half of time_budget_s.",
    )
    max_runs: int = Field(10000, ge=1, description="Adaptive: stop after this many runs.")
    ci_target: float = Field(0.02, gt=0, lt=1, description="Adaptive: stop at this relative median 95% CI.")
    timeout_s: float = Field(600.0, gt=0, description="Kill a probe running one configuration past this.")
    op_profile: bool = Field(
        True,
        description="Also record the slowest operators (ORT profiler, in a separate session after timing, "
        "so it cannot perturb the latency numbers).",
    )
    tensorrt: bool = Field(
        False,
        description="On devices with trtexec (Jetson): also build and time a TensorRT engine of each file "
        "(engine build time recorded separately). Devices without trtexec report null.",
    )
    dims: dict[str, int] = Field(
        default_factory=dict,
        description="Sizes of named dynamic input dimensions, e.g. {height: 512, width: 512}; win over the "
        "input size the export recorded. A dynamic non-batch dimension with neither is refused.",
    )
    shapes: dict[str, list[int]] = Field(
        default_factory=dict,
        description="Whole input shapes by input name, e.g. {input: [1, 3, 224, 224]}; win over dims. "
        "Axis 0 must equal batch where the model's batch is dynamic.",
    )
    provider: str | None = Field(
        None,
        description="ONNX Runtime execution provider, e.g. CUDAExecutionProvider, TensorrtExecutionProvider, "
        "CoreMLExecutionProvider (short forms like cuda work); null = CPU. Each target's onnxruntime must "
        "have it; one that lacks it is refused with the list it has.",
    )
    latency_cache: str | None = Field(
        None,
        description="Directory of cached latency models (edgekd calibrate); the report predicts each "
        "profile's p50 from them. Default ~/.cache/edgekd/latency; $EDGEKD_LATENCY_CACHE wins.",
    )

    @field_validator("threads")
    @classmethod
    def _non_negative(cls, threads: list[int]) -> list[int]:
        if any(t < 0 for t in threads):
            raise ValueError("thread counts must be >= 0 (0 means all cores)")
        return threads

    @field_validator("dims")
    @classmethod
    def _positive_dims(cls, dims: dict[str, int]) -> dict[str, int]:
        bad = {name: size for name, size in dims.items() if size < 1 or not name}
        if bad:
            raise ValueError(f"dimension sizes must be >= 1 and named, got {bad}")
        return dims

    @field_validator("shapes")
    @classmethod
    def _positive_shapes(cls, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
        bad = {name: shape for name, shape in shapes.items() if not shape or min(shape) < 1 or not name}
        if bad:
            raise ValueError(
                f"shapes must be non-empty lists of sizes >= 1, e.g. [1, 3, 224, 224], got {bad}"
            )
        return shapes

    @model_validator(mode="after")
    def _run_bounds(self) -> ProfileConfig:
        if self.min_runs > self.max_runs:
            raise ValueError(f"min_runs ({self.min_runs}) must be <= max_runs ({self.max_runs})")
        return self


class ReportConfig(Section):
    formats: list[Literal["json", "md", "html"]] = Field(default_factory=lambda: ["json", "md", "html"])
    title: str | None = None


class Recipe(Section):
    """A whole edgekd recipe. Precedence: defaults < recipe file < ``--set`` overrides (rightmost wins)."""

    task: str = Field("classification", description="classification | segmentation | regression")
    seed: int = Field(0, ge=0)
    device: str = Field(
        "auto",
        description="Where training runs (teacher training, distillation): auto (CUDA, then MPS, else CPU), "
        "cpu, cuda, cuda:N or mps. Pruning, export and profiling always run on the CPU.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _report_needs_json(self) -> Recipe:
        if "json" not in self.report.formats:
            raise ValueError("report.formats must include 'json' (the other reports are rendered from it)")
        return self

    @model_validator(mode="after")
    def _gates_refer_to_what_runs(self) -> Recipe:
        """A gate on a file or target the recipe does not produce fails at load, not after a long run."""
        produced = {STUDENT_ONNX: True, INT8_ONNX: self.export.int8, FP16_ONNX: self.export.fp16}
        if not produced[self.gates.artifact]:
            option = "export.int8" if "int8" in self.gates.artifact else "export.fp16"
            raise ValueError(f"gates.artifact is {self.gates.artifact} but {option} is not enabled")
        latency = self.gates.max_latency_ms
        if latency is not None and latency.target not in self.profile.targets:
            raise ValueError(
                f"gates.max_latency_ms.target '{latency.target}' is not in profile.targets "
                f"({', '.join(self.profile.targets)})"
            )
        return self

    @model_validator(mode="after")
    def _refine_needs_its_profile(self) -> Recipe:
        """``prune.latency.refine`` re-prunes on the student's measured p50: it must be measured."""
        latency = self.prune.latency
        if self.prune.target != "latency" or not latency.refine:
            return self
        if latency.target not in self.profile.targets or latency.threads not in self.profile.threads:
            raise ValueError(
                f"prune.latency.refine needs the student timed on {latency.target} at {latency.threads} "
                f"thread(s): add them to profile.targets ({', '.join(self.profile.targets)}) and "
                f"profile.threads ({', '.join(map(str, self.profile.threads))})"
            )
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (paths as strings), for recipe.yaml and report.json."""
        return self.model_dump(mode="json")
