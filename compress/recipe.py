"""The recipe: one YAML file that drives the whole flow, validated with pydantic.

Validation runs in two phases: the outer structure first (stages are only single-key mappings
there), then each stage's own config through its plugin, stopping at the first bad stage so one
typo never cascades into a page of errors.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.budget import AccuracyDrop, Budget
from compress.errors import InputError
from compress.gates import GatesConfig
from compress.recipe_yaml import LocatedYaml, apply_overrides, format_path, load_located_yaml
from compress.sweep_config import SweepConfig
from compress.validation import first_error_message

if TYPE_CHECKING:
    from compress.plan import Plan

SCHEMA_VERSION = 1
FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class Strict(BaseModel):
    """Every recipe section rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InputSpec(Strict):
    """One model input: its name, shape (first dimension is the batch, its size that of the export
    example) and dtype; and the axes whose size may change at run time ({0: batch, 1: sequence}).
    ONNX and OpenVINO keep those axes dynamic; TFLite fixes the declared shape."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$", max_length=128)] = "input"
    shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    dtype: Literal["float32", "float16", "int64", "int32"] = "float32"
    dynamic_axes: dict[Annotated[int, Field(ge=0)], Annotated[str, Field(pattern=r"^[A-Za-z_]\w*$")]] = Field(
        default_factory=lambda: {0: "batch"})

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[1:])

    @model_validator(mode="after")
    def _axes_exist(self) -> InputSpec:
        for axis in self.dynamic_axes:
            if axis >= len(self.shape):
                raise ValueError(f"dynamic axis {axis} is not an axis of shape {self.shape}")
        if self.dynamic_axes and 0 not in self.dynamic_axes:
            raise ValueError("the batch axis (0) is dynamic wherever another axis is")
        return self


class HuggingFaceConfig(Strict):
    """A Hugging Face transformers model from a local folder (config.json, weights, tokenizer files),
    never the hub. Without weights in the folder the model is built from its config with random
    weights (seeded by the recipe)."""

    path: str
    task: Literal["sequence_classification", "image_classification", "causal_lm", "feature_extraction"]
    num_labels: int | None = Field(None, gt=1)  # sequence_classification: the classifier's classes

    @model_validator(mode="after")
    def _labels_fit_task(self) -> HuggingFaceConfig:
        if self.num_labels is not None and not self.task.endswith("_classification"):
            raise ValueError("num_labels goes with task sequence_classification or image_classification")
        return self


class TrainConfig(Strict):
    """Train the model from scratch when no weights are given (the quickstart does this)."""

    epochs: int = Field(10, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, gt=0)
    max_steps: int | None = Field(None, gt=0)  # stop after this many optimizer steps (the schedule spans them)
    freeze: list[str] = Field(default_factory=list)  # parameter-name globs left as loaded (e.g. a backbone)


class ModelConfig(Strict):
    """Where the model comes from: a factory `module:attr` (+ weights), a Hugging Face folder, or a
    whole-model file; what it takes (`input`, or `inputs` for several) and which of its outputs the
    task reads (`output`: a name of a dict / ModelOutput result, or an index of a tuple)."""

    factory: Annotated[str, Field(pattern=FACTORY_PATTERN)] | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None
    huggingface: HuggingFaceConfig | None = None
    file: str | None = None
    trust: bool = False
    input: InputSpec | None = None
    inputs: list[InputSpec] | None = Field(None, min_length=1, max_length=64)
    output: Annotated[str, Field(min_length=1, max_length=128)] | Annotated[int, Field(ge=0)] | None = None
    train: TrainConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if sum(source is not None for source in (self.factory, self.file, self.huggingface)) != 1:
            raise ValueError("give exactly one of 'factory' (module:attr), 'huggingface' (a local folder) or 'file'")
        if self.factory is None and (self.weights is not None or self.kwargs):
            other = "file" if self.file is not None else "huggingface"
            raise ValueError(f"'weights' and 'kwargs' go with 'factory', not with '{other}'")
        if (self.input is None) == (self.inputs is None):
            raise ValueError("give exactly one of 'input' (one input) or 'inputs' (a list, one per model input)")
        names = [spec.name for spec in self.input_specs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must differ; {names} repeats one")
        return self

    @property
    def input_specs(self) -> list[InputSpec]:
        """Every input, in the order the model takes them."""
        return [self.input] if self.input is not None else list(self.inputs or [])

    @property
    def wrapped(self) -> bool:
        """The model is called through compress's adapter: several named inputs or a chosen output."""
        return self.huggingface is not None or self.inputs is not None or self.output is not None


class ImagesConfig(Strict):
    """`image_folder`: how each image becomes the model's input (the crop is the input's height and
    width; channels from its shape: 3 for RGB, 1 for grey)."""

    resize: int | None = Field(None, gt=0)  # the shorter side first (default: the crop / 0.875)
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406], min_length=1, max_length=4)
    std: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [0.229, 0.224, 0.225], min_length=1,
                                                     max_length=4)
    max_images: int = Field(1_000_000, gt=0)


class TextColumnsConfig(Strict):
    """`csv` / `jsonl`: which fields hold the text and the label, and the tokenizer that makes the
    model's inputs (padded and truncated to the inputs' sequence length)."""

    text: str = "text"
    text_pair: str | None = None
    label: str | None = "label"  # class names or integer indices; null for an embedding model
    tokenizer: str | None = None  # a folder with tokenizer files (default: model.huggingface.path)
    max_rows: int = Field(10_000_000, gt=0)


class DataConfig(Strict):
    """Where samples come from and how they are split and batched."""

    source: str = "digits"
    path: str | None = None
    callable: Annotated[str, Field(pattern=FACTORY_PATTERN)] | None = None
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    columns: TextColumnsConfig = Field(default_factory=TextColumnsConfig)
    batch_size: int = Field(64, gt=0)
    seed: int = 0
    calibration_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _source_fields(self) -> DataConfig:
        if self.source == "npz" and not self.path:
            raise ValueError("source 'npz' needs 'path' (an .npz file)")
        if self.source == "image_folder" and not self.path:
            raise ValueError("source 'image_folder' needs 'path' (a folder with one subfolder per class)")
        if self.source in ("csv", "jsonl", "parquet") and not self.path:
            raise ValueError(f"source {self.source!r} needs 'path' (a .{self.source} file)")
        if self.source == "arrow" and not self.path:
            raise ValueError("source 'arrow' needs 'path' (a folder Hugging Face datasets' save_to_disk wrote, or "
                             "an .arrow file)")
        if self.source == "callable" and not self.callable:
            raise ValueError("source 'callable' needs 'callable' (module:attr)")
        if self.calibration_fraction + self.test_fraction >= 1:
            raise ValueError("calibration_fraction + test_fraction must leave samples to train on")
        return self


class TaskConfig(Strict):
    """classification: logits vs labels; language_model: next-token logits vs the next tokens;
    embedding: vectors compared with the original model's (metric `cosine`, no labels needed)."""

    kind: Literal["classification", "language_model", "embedding"] = "classification"
    metric: str = "top1"

    @model_validator(mode="after")
    def _metric_fits_kind(self) -> TaskConfig:
        if self.kind == "embedding" and self.metric in ("top1", "perplexity"):
            raise ValueError(f"metric {self.metric!r} needs labels; an embedding task is scored with 'cosine'")
        if self.kind != "embedding" and self.metric == "cosine":
            raise ValueError("metric 'cosine' compares embeddings: use it with kind 'embedding'")
        return self


class CalibrationConfig(Strict):
    """How static int8 finds activation ranges from samples of the calibration split."""

    samples: int = Field(256, gt=0)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=0, le=100)


class SearchConfig(Strict):
    """Bounds of the accuracy-aware search: it stops at whichever comes first, with the best found."""

    max_trials: int = Field(24, gt=0)  # quantized candidates scored, the first (everything int8) included
    max_seconds: float = Field(900.0, gt=0, allow_inf_nan=False)


class FirstLayersConfig(Strict):
    """The first-layer policy of static int8: the layers nearest the input stay in float. They see
    the raw input (few channels, high-gain filters) and their quantized outputs feed everything
    after: on EfficientNet-Lite0's real weights, int8 cosine to fp32 went from 0.984 to 0.994 on
    ONNX Runtime and from 0.984 to 0.991 on TFLite with its first three layers in float (5% of its
    MACs). Dynamic int8 quantizes activations from their actual range per call: it keeps them all."""

    in_float: int = Field(3, ge=0)  # the first layers that multiply, in the order the input reaches them
    max_macs_share: float = Field(0.1, ge=0, le=1)  # ... while they hold at most this share of the MACs


Precision = Literal["int8", "fp16", "int4_weights"]
INT8_ONLY = "applies to int8"


class Int4Config(Strict):
    """4-bit weight-only compression (`precision: int4_weights`): the weights of MatMul / fully
    connected layers in 4 bits, in groups of `group_size` along the input axis, each group with its
    own scale; activations stay float (TFLite's int4 recipe quantizes them to int8 per call)."""

    group_size: int = Field(64, ge=16)  # a power of two; TFLite takes 32, 64, 128 or 256
    symmetric: bool = True  # no zero point (asymmetric: NNCF and ONNX Runtime only)
    # Data-aware methods on the calibration split, NNCF (OpenVINO) only: activation-aware scaling of
    # salient channels (AWQ) and scales fitted to the layer's outputs (scale estimation).
    awq: bool = False
    scale_estimation: bool = False
    samples: int = Field(64, gt=0)  # calibration samples the data-aware methods see

    @field_validator("group_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"group_size must be a power of two (16, 32, 64, ...), not {value}")
        return value


class QuantizeConfig(Strict):
    """The one int8 intent; each format realizes it with its own quantizer, or `compress validate`
    refuses an option that format's tool cannot honour (docs/recipe.md has the table). `precision`
    may also ask for fp16 (each format's own float16 conversion), alone or beside int8; every other
    option here is int8's."""

    precision: Precision | Annotated[list[Precision], Field(min_length=1)] = "int8"
    int4: Int4Config = Field(default_factory=Int4Config)  # precision int4_weights
    # static: weights and activations in int8, activation ranges calibrated on samples (fastest).
    # dynamic: int8 weights, activations quantized at run time from their actual range; it keeps
    # accuracy where activation ranges vary by input (transformers, recurrent layers): MiniLM's
    # embeddings kept cosine 0.993 with dynamic ORT int8 and 0.26 with static here.
    # auto: static for feed-forward models, dynamic where activations multiply activations
    # (attention) or recur (LSTM / GRU / RNN); chosen once from the model (compress/int8_mode.py).
    mode: Literal["auto", "static", "dynamic"] = "auto"
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    per_channel: bool = True  # weights: one scale per output channel
    # The activations' type and symmetry; unset, each format uses its own default (recorded in
    # results.json): uint8 asymmetric on ONNX Runtime (its fast x86 kernels: int8/int8 barely beat
    # fp32 on a ResNet-18 here, 13.2 ms against 4.0 ms for uint8/int8), NNCF's choice per tensor on
    # OpenVINO, int8 asymmetric on TFLite (the format's int8 spec).
    activations: Literal["uint8", "int8"] | None = None
    symmetric_activations: bool | None = None
    weights: Literal["int8"] = "int8"
    # Static int8: move each layer's float bias by the shift int8 puts in the mean of its outputs,
    # measured on calibration samples layer after layer (NNCF's bias correction on OpenVINO, ours on
    # the PT2E graph for TFLite: EfficientNet-Lite0's top-1 agreement with fp32 0.83 -> 0.93 on
    # near-tie crops). Unset: each format's default: on in NNCF, off on TFLite (ours cost a distilled
    # MobileNet on digits cosine 0.88 against >= 0.98 without), none in ONNX Runtime.
    bias_correction: bool | None = None
    ignore: list[str] = Field(default_factory=list)
    first_layers: FirstLayersConfig = Field(default_factory=FirstLayersConfig)
    # Options only one format's tool has, under its name: {openvino: {model_type: transformer}}.
    per_format: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # An artifact is labelled int8 when at least this share of its weighted ops' MACs (static) or
    # weights (dynamic: activations are quantized per call) is int8, read back from the artifact;
    # otherwise it is labelled mixed, with the ops left in float named.
    min_int8_share: float = Field(0.5, ge=0, le=1)
    # Accuracy-aware int8: at most this drop against the fp32 parent on the validation data,
    # absolute (0.01 = one point of top-1) or relative ("1%"). Layers stay in float until it holds.
    max_accuracy_drop: AccuracyDrop | None = None
    search: SearchConfig = Field(default_factory=SearchConfig)

    def explicit(self) -> set[str]:
        """The int8 options the recipe set (`calibration.method` for a nested one), not left to defaults."""
        nested = {f"calibration.{name}" for name in self.calibration.model_fields_set}
        return (set(self.model_fields_set) - {"int4"}) | nested

    def precisions(self) -> list[str]:
        """What the recipe asks for, in its order: ["int8"], ["fp16"], ["int8", "fp16"], ..."""
        return [self.precision] if isinstance(self.precision, str) else list(self.precision)

    @property
    def int8(self) -> bool:
        return "int8" in self.precisions()

    @field_validator("precision")
    @classmethod
    def _each_precision_once(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(set(value)) != len(value):
            twice = next(p for p in value if value.count(p) > 1)
            raise ValueError(f"{twice!r} is listed twice")
        return value

    @model_validator(mode="after")
    def _int8_options_need_int8(self) -> QuantizeConfig:
        if "int4" in self.model_fields_set and "int4_weights" not in self.precisions():
            raise ValueError(f"int4 applies to int4_weights, and precision {self.precision!r} has no int4_weights: "
                             "remove it, or add int4_weights to precision")
        if not self.int8:
            options = sorted(o for o in self.model_fields_set if o not in ("precision", "int4"))
            if options:
                raise ValueError(f"{options[0]} {INT8_ONLY}, and precision {self.precision!r} has no int8: remove "
                                 "it, or add int8 to precision")
        return self


class LatencyConfig(Strict):
    warmup: int = Field(10, ge=0)
    min_runs: int = Field(50, gt=0)
    min_seconds: float = Field(1.0, ge=0)
    threads: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [1], min_length=1)
    batch_size: int = Field(1, gt=0)
    # Rounds of timed runs; gates compare the median of the rounds' p50s, robust to a noisy machine.
    trials: int = Field(1, gt=0)


class ParityThresholds(Strict):
    """How close an artifact's outputs must stay to the torch model it was made from."""

    max_abs_error: float | None = Field(None, gt=0)
    min_cosine: float = Field(ge=-1, le=1)
    min_agreement: float = Field(ge=0, le=1)


def _default_parity() -> dict[str, ParityThresholds]:
    return {
        "fp32": ParityThresholds(max_abs_error=1e-3, min_cosine=0.9999, min_agreement=0.99),
        "fp16": ParityThresholds(max_abs_error=5e-2, min_cosine=0.999, min_agreement=0.98),
        "int8": ParityThresholds(min_cosine=0.98, min_agreement=0.95),
        # 4-bit weights lose more than int8 (a random-initialised TinyGPT: cosine 0.97-0.98 in each
        # format with groups of 32); a trained model keeps more: set your own for your model
        "int4_weights": ParityThresholds(min_cosine=0.95, min_agreement=0.85),
    }


class VerifyConfig(Strict):
    runtimes: list[str] = Field(default_factory=lambda: ["torch", "onnxruntime"], min_length=1)
    targets: list[str] = Field(default_factory=lambda: ["local"], min_length=1)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    parity: dict[Literal["fp32", "fp16", "int8", "int4_weights"], ParityThresholds] = Field(
        default_factory=_default_parity)
    timeout_s: float = Field(600.0, gt=0)

    @field_validator("parity")
    @classmethod
    def _keep_defaults(cls, given: dict[str, ParityThresholds]) -> dict[str, ParityThresholds]:
        return {**_default_parity(), **given}  # a recipe overrides one precision without losing the rest


class PathsConfig(Strict):
    """Where inputs may come from besides the recipe's own folder (docs/security.md)."""

    allow_outside: list[str] = Field(default_factory=list)  # folders: absolute, or relative to the recipe


class Recipe(Strict):
    """The outer structure. `stages` items are checked by their plugins in phase two."""

    schema_version: Literal[1]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    seed: int = 0
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    quantize: QuantizeConfig | None = None
    # Each item is a format name, or {format: {its options}} (e.g. {openvino: {fp16: true}}).
    export: list[str | dict[str, dict[str, Any]]] = Field(default_factory=lambda: ["onnx"])
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    gates: GatesConfig | None = None
    paths: PathsConfig = Field(default_factory=PathsConfig)
    sweep: SweepConfig | None = None  # read by `compress sweep` only

    @field_validator("stages")
    @classmethod
    def _single_key_stages(cls, stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in stages:
            if len(item) != 1:
                raise ValueError("each stage is a mapping with exactly one key, the stage name "
                                 "(e.g. '- prune: {importance: l2}')")
        return stages

    @field_validator("export")
    @classmethod
    def _single_key_exports(cls, exports: list[str | dict[str, dict[str, Any]]]) -> list[str | dict[str, Any]]:
        for item in exports:
            if isinstance(item, dict) and len(item) != 1:
                raise ValueError("each export is a format name or {format: {options}} with one key")
        return exports

    @model_validator(mode="after")
    def _quantize_needs_an_export(self) -> Recipe:
        if self.quantize is not None and not self.export:
            raise ValueError("quantize needs at least one format in export")
        return self


def _raise_validation(exc: ValidationError, located: LocatedYaml, model: type[BaseModel],
                      prefix: tuple[str | int, ...] = ()) -> None:
    loc, message = first_error_message(exc, model)
    full = prefix + loc
    field = format_path(full)
    origin = located.origin(full)
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more > 0 else ""
    raise InputError(message + suffix, file=origin.file, line=origin.line, field=field or None) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Plan:
    """Read, override and validate a recipe in two phases, and resolve every plugin and target it
    names into a Plan. Raises InputError on the first fault."""
    path = Path(path)
    located = load_located_yaml(path)
    if overrides:
        apply_overrides(located, overrides)
    data = located.data
    if not isinstance(data, dict):
        raise InputError("a recipe is a mapping of keys (schema_version, name, model, ...)", file=path)
    version = data.get("schema_version")
    if version is not None and (type(version) is not int or version != SCHEMA_VERSION):
        origin = located.origin(("schema_version",))
        raise InputError(f"this compress reads schema_version {SCHEMA_VERSION}, not {version!r}",
                         file=origin.file, line=origin.line, field="schema_version")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, located, Recipe)
    return _plan(path, recipe, data, located)


def _plan(path: Path, recipe: Recipe, data: dict[str, Any], located: LocatedYaml) -> Plan:
    """Phase two: each plugin's own config, and every plugin and target resolved once."""
    from compress import registry
    from compress.contracts import SOURCE_FORMAT
    from compress.plan import Plan, PlannedFormat, PlannedStage, loaders_of
    from compress.targets import resolve_all  # parses each spec; nothing connects yet

    def where(*key: str | int) -> dict[str, Any]:
        origin = located.origin(key)
        return {"file": origin.file, "line": origin.line}

    stages: list[PlannedStage] = []
    for index, item in enumerate(recipe.stages):
        ((name, config),) = item.items()
        stage_cls = registry.require("compress.stages", name, **where("stages", index, name), field=f"stages[{index}]")
        try:
            stage_config = stage_cls.Config.model_validate(config or {})
        except ValidationError as exc:
            _raise_validation(exc, located, stage_cls.Config, ("stages", index, name))
        stages.append(PlannedStage(index=index, name=name, plugin=stage_cls, config=stage_config))

    probe = _Probe(recipe, path)
    mode_reason = None
    if recipe.quantize is not None and recipe.quantize.int8 and recipe.quantize.mode == "auto":
        chosen, mode_reason = probe.int8_mode()
        recipe = recipe.model_copy(update={"quantize": recipe.quantize.model_copy(update={"mode": chosen})})
        recipe.quantize.__pydantic_fields_set__.discard("mode")  # chosen, not set by the recipe
    for stage in stages:  # what a stage needs from the rest of the recipe (int8 mode chosen by now)
        check = getattr(stage.plugin, "check_recipe", None)
        problem = check(stage.config, recipe) if check is not None else None
        if problem is not None:
            sub, message = problem
            raise InputError(message, **where("stages", stage.index, stage.name),
                             field=f"stages[{stage.index}].{stage.name}" + (f".{sub}" if sub else ""))

    formats: list[PlannedFormat] = []
    for index, item in enumerate(recipe.export):
        name, options = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        at = where("export", index)
        plugin = registry.require("compress.formats", name, **at, field=f"export[{index}]")()
        config_cls = plugin.Config
        if config_cls is None and options:
            raise InputError(f"format {name!r} takes no options", **at, field=f"export[{index}].{name}")
        try:
            export_config = config_cls.model_validate(options or {}) if config_cls else None
        except ValidationError as exc:
            _raise_validation(exc, located, config_cls, ("export", index, name))
        if any(f.name == name for f in formats):
            raise InputError(f"{name!r} is exported twice", **at, field=f"export[{index}]")
        if recipe.quantize is not None:
            _check_precisions(name, plugin, recipe.quantize, where)
        formats.append(PlannedFormat(index=index, name=name, plugin=plugin, options=export_config))
    source = registry.require("compress.formats", SOURCE_FORMAT, file=str(path), field="model")()

    runtimes: dict[str, type] = {}
    for index, name in enumerate(recipe.verify.runtimes):
        runtimes[name] = registry.require("compress.runtimes", name, **where("verify", "runtimes", index),
                                          field=f"verify.runtimes[{index}]")
    targets = resolve_all(recipe.verify.targets, origins=[located.origin(("verify", "targets", index))
                                                          for index in range(len(recipe.verify.targets))])
    if recipe.model.factory is not None:  # imported, not called: a model factory, from where factories come
        from compress.modelio import resolve_factory

        resolve_factory(recipe.model.factory, path.parent, file=str(path), field="model.factory")
    if recipe.data.callable is not None:
        from compress.modelio import resolve_factory

        resolve_factory(recipe.data.callable, path.parent, file=str(path), field="data.callable", builds="data")
    dataset = registry.load("compress.datasets", recipe.data.source, **where("data", "source"), field="data.source")
    metric = registry.load("compress.metrics", recipe.task.metric, **where("task", "metric"), field="task.metric")
    for key, raw in (("quantize", recipe.quantize.max_accuracy_drop if recipe.quantize else None),
                     ("gates", recipe.gates.max_accuracy_drop if recipe.gates else None)):
        if raw is None:
            continue
        problem = Budget.parse(raw, metric.lower_is_better).out_of_range(recipe.task.metric,
                                                                         getattr(metric, "bounds", (None, None)))
        if problem:
            raise InputError(problem, **where(key, "max_accuracy_drop"), field=f"{key}.max_accuracy_drop")
    makes_int8 = recipe.quantize is not None and recipe.quantize.int8
    warnings = _check_quantize(recipe, formats, path, where, probe) if makes_int8 else []
    loaders = {f.name: loaders_of(f.name, f.plugin, runtimes) for f in [*formats]}
    loaders[SOURCE_FORMAT] = loaders_of(SOURCE_FORMAT, source, runtimes)
    return Plan(path=path, recipe=recipe, raw=data, stages=stages, formats=formats, runtimes=runtimes,
                targets=targets, dataset=dataset, metric=metric, source=source, loaders=loaders, warnings=warnings,
                quantize_mode_reason=mode_reason)


class _Probe:
    """The recipe's model, built once (from its factory) when validation needs to look at it."""

    def __init__(self, recipe: Recipe, path: Path) -> None:
        self.recipe, self.path = recipe, path
        self._model: Any = None
        self.mode_reason: str | None = None

    def model(self) -> Any:
        """The model as the run calls it (adapted to named inputs or a chosen output), or None for a
        model file (loading it runs code: not at validation)."""
        config = self.recipe.model
        if self._model is None and (config.factory is not None or config.huggingface is not None):
            from compress.modelio import adapt, build_from_factory

            file = str(self.path)
            if config.huggingface is not None:
                from compress import hf

                folder = self.path.parent
                allowed = [Path(p).expanduser() if Path(p).expanduser().is_absolute() else folder / p
                           for p in self.recipe.paths.allow_outside]
                location = hf.resolve_folder(config.huggingface.path, folder=folder, allowed=allowed, file=file,
                                             field="model.huggingface.path")
                raw, _ = hf.build(config.huggingface, location, seed=self.recipe.seed, file=file)
            else:
                assert config.factory is not None
                raw = build_from_factory(config.factory, config.kwargs, self.path.parent, file=file,
                                         field="model.factory")
            self._model = adapt(raw, config)
        return self._model

    def int8_mode(self) -> tuple[str, str]:
        """quantize.mode auto: what the model computes says static or dynamic (compress/int8_mode.py)."""
        mode, self.mode_reason = self._choose()
        return mode, self.mode_reason

    def _choose(self) -> tuple[str, str]:
        model = self.model()
        if model is None:  # a model file runs code when loaded: not at validation
            return "static", ("the model is a file, not run at validation: static int8 (set quantize.mode: dynamic "
                              "for attention or recurrent layers)")
        import torch

        from compress.int8_mode import choose_mode

        examples = []
        for spec in self.recipe.model.input_specs:
            dtype = getattr(torch, spec.dtype)
            example = torch.zeros(spec.shape, dtype=dtype) if not dtype.is_floating_point else torch.rand(spec.shape)
            examples.append(example.to(dtype))
        try:
            return choose_mode(model, tuple(examples))
        except Exception as exc:  # the run itself will say what is wrong with the model
            return "static", f"the model did not run on a probe input ({type(exc).__name__}): static int8"


def _check_precisions(name: str, plugin: Any, config: QuantizeConfig, where: Any) -> None:
    """The format makes every precision the recipe asks for (int8 in the chosen mode)."""
    can = ", ".join(f"{p} {m}" if p == "int8" else p for p, ms in plugin.quantize_modes.items() for m in ms) \
        or "nothing"
    for index, precision in enumerate(config.precisions()):
        wanted = f"int8 {config.mode}" if precision == "int8" else precision
        if precision not in plugin.quantize_modes or (precision == "int8"
                                                      and config.mode not in plugin.quantize_modes["int8"]):
            at, field = (("quantize",), "quantize") if precision == "int8" else (
                ("quantize", "precision", *((index,) if isinstance(config.precision, list) else ())),
                "quantize.precision" + (f"[{index}]" if isinstance(config.precision, list) else ""))
            raise InputError(f"format {name!r} cannot make {wanted} (its quantizer makes: {can}); drop it from export "
                             "or change quantize", **where(*at), field=field)
    check_int4 = getattr(plugin, "check_int4", None)
    if "int4_weights" in config.precisions() and check_int4 is not None:
        for option, reason in check_int4(config.int4):
            raise InputError(f"format {name!r} cannot honour it: {reason}", **where("quantize", "int4", option),
                             field=f"quantize.int4.{option}")


def _check_quantize(recipe: Recipe, formats: list[Any], path: Path, where: Any, probe: _Probe) -> list[str]:
    """Every quantize option is carried out by every format, or refused here naming the format and the
    option; a layer a format's quantizer leaves in float is said here, one it cannot convert refused."""
    config = recipe.quantize
    assert config is not None
    warnings: list[str] = []
    calibrated = any(o.startswith("calibration.") for o in config.explicit())
    if config.mode == "dynamic" and calibrated:
        if "mode" in config.explicit():
            raise InputError("dynamic int8 calibrates nothing (activations are quantized per call): remove it, or use "
                             "mode: static", **where("quantize", "calibration"), field="quantize.calibration")
        warnings.append(f"{path}: quantize.calibration: unused: mode auto chose dynamic int8 for this model, which "
                        "calibrates nothing (set quantize.mode: static to calibrate)")
    from compress import registry

    by_name = {f.name: f for f in formats}
    for name, options in config.per_format.items():
        at = where("quantize", "per_format", name)
        if name not in by_name:
            registry.load("compress.formats", name, **at, field=f"quantize.per_format.{name}")  # a known format?
            warnings.append(f"{path}: quantize.per_format.{name}: {name!r} is not exported by this recipe "
                            f"({', '.join(by_name) or 'none'}): its options apply to nothing")
            continue
        options_cls = by_name[name].plugin.QuantizeOptions
        if options_cls is None:
            raise InputError(f"format {name!r} has no options of its own", **at, field=f"quantize.per_format.{name}")
        try:
            options_cls.model_validate(options or {})
        except ValidationError as exc:
            loc, message = first_error_message(exc, options_cls)
            raise InputError(message, **at, field=format_path(("quantize", "per_format", name, *loc))) from None
    for planned in formats:
        for option, reason in planned.plugin.check_quantize(config):
            chosen = (f" (mode auto chose dynamic int8: {probe.mode_reason}; set quantize.mode: static to keep it)"
                      if probe.mode_reason and config.mode == "dynamic" else "")
            raise InputError(f"format {planned.name!r} cannot honour it: {reason}{chosen}",
                             **where("quantize", *option.split(".")), field=f"quantize.{option}")
    return warnings + _recurrent_layers(recipe, formats, path, where, probe)


def _recurrent_layers(recipe: Recipe, formats: list[Any], path: Path, where: Any, probe: _Probe) -> list[str]:
    """What each format's quantizer does with the model's recurrent layers (the format says, as
    measured): it fails (refused here) or leaves them in float (a warning)."""
    config = recipe.quantize
    assert config is not None
    if recipe.model.file is not None or not any(f.plugin.layer_int8.get(config.mode) for f in formats):
        return []
    model = probe.model()
    layers: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("LSTM", "GRU", "RNN") and not any(fnmatch.fnmatchcase(name, g) for g in config.ignore):
            layers.setdefault(kind, []).append(name)
    warnings = []
    for planned in formats:
        for kind, names in layers.items():
            outcome = planned.plugin.layer_int8.get(config.mode, {}).get(kind, "int8")
            said = f"{kind} layer(s) {', '.join(names)}"
            others = [m for m in ("static", "dynamic") if m != config.mode
                      and planned.plugin.layer_int8.get(m, {}).get(kind, "int8") == "int8"]
            hint = f"; quantize.mode: {others[0]} puts them in int8" if others else ""
            if outcome == "fails":
                raise InputError(f"format {planned.name!r}: its {config.mode} int8 cannot convert the {said}{hint}; or "
                                 "drop the format from export", **where("quantize", "mode"), field="quantize.mode")
            if outcome == "float":
                warnings.append(f"{path}: quantize: format {planned.name!r}: its {config.mode} int8 leaves the {said} "
                                f"in float{hint}")
    return warnings


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema for editors: the outer structure plus each installed stage's own config,
    with every definition gathered in one root `$defs` so all references resolve."""
    from pydantic.json_schema import models_json_schema

    from compress import registry

    stage_configs: dict[str, type[BaseModel]] = {}
    for name in registry.names("compress.stages"):
        try:
            stage_configs[name] = registry.load("compress.stages", name).Config
        except InputError:
            continue  # a broken third-party plugin must not break the schema
    models = [(Recipe, "validation"), *((config, "validation") for config in stage_configs.values())]
    refs, combined = models_json_schema(models, ref_template="#/$defs/{model}")
    defs = combined.get("$defs", {})
    schema = dict(defs.pop(Recipe.__name__))
    schema["$defs"] = defs
    schema["properties"]["stages"] = {"type": "array", "items": {"oneOf": [
        {"type": "object", "properties": {name: refs[(config, "validation")]}, "required": [name],
         "additionalProperties": False}
        for name, config in stage_configs.items()]}}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compress recipe"
    return schema
