"""The steps of a run: original, each torch stage, each export, each quantization.

A step has one `key()`: its parent's key, what it does, its config, the versions of the libraries
it uses and compress's own version. That key is its artifact's id in the cache, so `--resume`
reuses exactly the steps whose inputs are all unchanged. `build()` makes the artifact in a private
folder; the pipeline is a loop over steps (compress.pipeline).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress import versions
from compress.artifact import Artifact, sha256_of, stable_hash
from compress.console import activity
from compress.contracts import (
    SOURCE_FORMAT,
    Exported,
    ExportRequest,
    Fp16Request,
    Int4Request,
    QuantizeRequest,
    StageContext,
)
from compress.errors import CompressError, InputError, StageError
from compress.interrupts import signals_held

if TYPE_CHECKING:
    import logging

    import numpy as np
    import torch
    from rich.console import Console

    from compress.contracts import RunOutputs
    from compress.data import Splits
    from compress.plan import Plan, PlannedFormat, PlannedStage


@dataclass
class RunContext:
    """What every step of one run shares."""

    plan: Plan
    data: Splits
    console: Console
    log: logging.Logger
    run: RunOutputs
    original: torch.nn.Module | None = None  # set by the original step
    calibration_reference: np.ndarray | None = None  # the original's outputs on the calibration split

    @property
    def file(self) -> str:
        return self.plan.file

    def example(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Samples of the calibration split, one tensor per input: real token ids and attention masks
        trace and check an export better than zeros. A split smaller than `batch` is repeated (an
        export traced at batch 1 would fix the batch axis)."""
        import numpy as np

        split = self.data.calibration
        return split.take(np.arange(batch) % len(split)).tensors()

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.plan.recipe.model.input_specs]

    @property
    def dynamic_axes(self) -> list[dict[int, str]]:
        return [dict(spec.dynamic_axes) for spec in self.plan.recipe.model.input_specs]


@dataclass
class Built:
    """A step's artifact, whether it was reused from the cache, and the torch model at hand for it
    (the artifact itself for torch steps, the model it was made from for the others)."""

    step: Step
    artifact: Artifact
    cached: bool
    seconds: float
    torch_model: Any = None

    @property
    def label(self) -> str:
        return self.step.label


@dataclass(eq=False)
class Step:
    """One node of the flow. Subclasses say what they do, and with which libraries."""

    label: str  # its name in results.json's stages
    name: str  # its artifact's name
    parent: Step | None = None
    libraries: tuple[str, ...] = ()
    refusable: bool = False  # a failure is recorded as a refusal and the run goes on

    def config(self) -> Any:
        """What the step does, as JSON-able data."""
        raise NotImplementedError

    def inputs(self, ctx: RunContext) -> Any:
        """What else the step reads besides its parent (data, weights, source code)."""
        return None

    def key(self, ctx: RunContext) -> str:
        """The artifact's id: computed once (inputs such as the weights' hash are read once)."""
        if "_key" not in self.__dict__:
            self.__dict__["_key"] = stable_hash(
                self.parent.key(ctx) if self.parent else None, type(self).__name__, self.label, self.config(),
                self.inputs(ctx), versions.of(self.libraries))
        return self.__dict__["_key"]

    def announce(self, ctx: RunContext) -> None:
        activity(ctx.console, f"{self.label} [bold]{self.name}[/]")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        """Write the artifact inside `folder`; returns it and the torch model at hand for it."""
        raise NotImplementedError

    def reuse(self, artifact: Artifact, parent: Built | None, ctx: RunContext) -> Any:
        """The torch model at hand for a reused artifact."""
        return parent.torch_model if parent else None

    def after(self, built: Built, ctx: RunContext) -> None:
        """Checks on the artifact, built or reused."""


def _torch_counts(model: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> dict[str, int]:
    params = sum(p.numel() for p in model.parameters())
    try:
        import torch_pruning as tp

        macs, _ = tp.utils.count_ops_and_params(model, example)
        return {"params": int(params), "macs": int(macs)}
    except Exception:  # MACs are informative; a model torch-pruning cannot trace still runs
        return {"params": int(params)}


def _store_torch(step: Step, model: torch.nn.Module, folder: Path, ctx: RunContext, parent: Artifact | None,
                 info: dict[str, Any]) -> Artifact:
    from compress.modelio import model_factory, save_torch_artifact

    factory, kwargs = model_factory(ctx.plan.recipe.model, ctx.plan)
    target = folder / "model"
    save_torch_artifact(model, target, factory=factory, kwargs=kwargs, source_folder=ctx.plan.folder,
                        example=ctx.example())
    return Artifact(id=step.key(ctx), name=step.name, format=SOURCE_FORMAT, precision="fp32", path=target,
                    sha256=sha256_of(target), lineage=(*(parent.lineage if parent else ()), step.label),
                    parent=parent.id if parent else None, info=info, attributes=_torch_counts(model, ctx.example()))


def _factory_source_hash(factory: str | None, folder: Path) -> str | None:
    """Hash the factory's source file, so editing the model invalidates the cache."""
    if factory is None:
        return None
    from compress.modelio import resolve_object

    try:
        source = inspect.getsourcefile(resolve_object(factory, folder))
    except (TypeError, CompressError):
        return None
    return sha256_of(Path(source)) if source else None


# --- the torch steps ---------------------------------------------------------------------------

@dataclass(eq=False)
class OriginalStep(Step):
    """The user's model, trained first when the recipe asks and no weights are given."""

    libraries: tuple[str, ...] = ("torch",)

    def config(self) -> Any:
        return None

    def inputs(self, ctx: RunContext) -> Any:
        model = ctx.plan.recipe.model
        weights = None
        if model.weights is not None:
            weights = sha256_of(ctx.plan.resolve_path(model.weights, "model.weights", "weights file"))
        trains = model.weights is None and model.train is not None and model.file is None
        model_file = sha256_of(ctx.plan.resolve_path(model.file, "model.file", "model file")) if model.file else None
        if model.huggingface is not None:  # its config and weights, so a changed folder is noticed
            from compress.hf import WEIGHT_FILES
            from compress.modelio import _hf_folder

            folder = _hf_folder(model, ctx.plan, "model")
            weights = {name: sha256_of(folder / name) for name in ("config.json", *WEIGHT_FILES)
                       if (folder / name).is_file()}
        return {"model": model.model_dump(mode="json"), "weights": weights, "file": model_file,
                "factory_source": _factory_source_hash(model.factory, ctx.plan.folder),
                "data": ctx.data.fingerprint() if trains else None, "seed": ctx.plan.recipe.seed}

    def announce(self, ctx: RunContext) -> None:
        activity(ctx.console, "original model")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        from compress.modelio import build_model
        from compress.tasks import training_loss
        from compress.train import fit, freeze_parameters, seed_everything

        config = ctx.plan.recipe.model
        seed_everything(ctx.plan.recipe.seed)  # before building: the same initial weights every run
        model = build_model(config, ctx.plan)
        _check_forward(model, ctx)  # before training: bad labels are the data's fault, said as such
        info: dict[str, Any] = {}
        if config.weights is None and config.train is not None and config.file is None:
            frozen = freeze_parameters(model, config.train.freeze, file=ctx.file, field="model.train.freeze")
            info["train_epoch_losses"] = [round(v, 5) for v in fit(
                model, ctx.data.train, epochs=config.train.epochs, lr=config.train.lr,
                batch_size=config.train.batch_size, seed=ctx.plan.recipe.seed, max_steps=config.train.max_steps,
                lr_field="model.train.lr",
                loss_fn=training_loss(ctx.plan.recipe.task.kind), console=ctx.console, description="train original")]
            freeze_parameters(model, [])
            if frozen:
                info["train_frozen_parameters"] = len(frozen)
        elif config.weights is None and config.file is None:
            ctx.log.warning("model has no weights and no train section: using its initial parameters")
        return _store_torch(self, model, folder, ctx, None, info), model

    def reuse(self, artifact: Artifact, parent: Built | None, ctx: RunContext) -> Any:
        from compress.modelio import load_torch_artifact

        model = load_torch_artifact(artifact.path)
        _check_forward(model, ctx)
        return model

    def after(self, built: Built, ctx: RunContext) -> None:
        ctx.original = built.torch_model


def _check_forward(model: torch.nn.Module, ctx: RunContext) -> None:
    """The model runs on the data, and the labels name outputs it has."""
    import numpy as np
    import torch

    from compress.runtimes.backends.torch import outputs_of

    sample = ctx.data.test.head(2).tensors()
    try:
        with torch.no_grad():
            outputs = outputs_of(model(*sample))
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in sample)
        raise InputError(f"the model fails on a batch of shape {shapes}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         file=ctx.file, field="model.input" if len(sample) == 1 else "model.inputs") from None
    if ctx.plan.recipe.task.kind == "embedding" or not outputs:
        return
    classes = int(outputs[0].shape[-1])
    for name in ("train", "calibration", "test"):
        labels = getattr(ctx.data, name).y
        if labels is None:
            continue
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{name} labels are {labels.dtype}, not integer class indices", file=ctx.file,
                             field="data")
        flat = labels.reshape(len(labels), -1)
        bad = ((flat < 0) | (flat >= classes)).any(axis=1)
        if bad.any():
            index = int(np.argmax(bad))
            row = flat[index]
            label = int(row[(row < 0) | (row >= classes)][0])
            raise InputError(f"{name} sample {index} has label {label}, outside the model's {classes} outputs "
                             f"(0 to {classes - 1})", file=ctx.file, field="data")


@dataclass(eq=False)
class StageStep(Step):
    """A torch -> torch stage plugin (prune, distill, a third party's)."""

    stage: PlannedStage | None = None

    def config(self) -> Any:
        assert self.stage is not None
        return {"stage": self.stage.name, "config": self.stage.config.model_dump(mode="json")}

    def announce(self, ctx: RunContext) -> None:
        activity(ctx.console, f"stage [bold]{self.label}[/]")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        assert self.stage is not None and parent is not None and ctx.original is not None
        index, name = self.stage.index, self.stage.name
        plugin = self.stage.plugin(self.stage.config)
        stage_ctx = StageContext(plan=ctx.plan, data=ctx.data, original=ctx.original, console=ctx.console,
                                 log=ctx.log, seed=ctx.plan.recipe.seed)
        try:
            result = plugin.run(copy.deepcopy(parent.torch_model), stage_ctx)
        except CompressError as exc:
            if exc.field and exc.field.startswith("stages["):
                raise
            raise exc.within(f"stages[{index}]") from exc
        except Exception as exc:
            raise StageError(f"stage failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                             file=ctx.file, field=f"stages[{index}].{name}") from exc
        model = result.model.eval()
        ctx.log.info("stage %s: %s", self.label, result.info)
        return _store_torch(self, model, folder, ctx, parent.artifact, result.info), model

    def reuse(self, artifact: Artifact, parent: Built | None, ctx: RunContext) -> Any:
        from compress.modelio import load_torch_artifact

        activity(ctx.console, f"stage [bold]{self.label}[/]: unchanged, reused from cache")
        return load_torch_artifact(artifact.path)


# --- the format steps --------------------------------------------------------------------------

def _artifact(step: Step, ctx: RunContext, parent: Artifact, exported: Exported, precision: str,
              lineage_step: str, info: dict[str, Any]) -> Artifact:
    return Artifact(id=step.key(ctx), name=step.name, format=step.format.name,  # type: ignore[attr-defined]
                    precision=exported.precision or precision, path=exported.path, sha256=sha256_of(exported.path),
                    lineage=(*parent.lineage, lineage_step), parent=parent.id, info=info,
                    attributes=parent.derived_attributes(exported.attributes))


@dataclass(eq=False)
class ExportStep(Step):
    """A torch model to one format, in fp32, by the format's plugin."""

    format: PlannedFormat | None = None
    refusable: bool = True

    def config(self) -> Any:
        assert self.format is not None
        options = self.format.options
        return {"format": self.format.name, "options": options.model_dump(mode="json") if options else None}

    def announce(self, ctx: RunContext) -> None:
        activity(ctx.console, f"export [bold]{self.name}[/]")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        assert self.format is not None and parent is not None
        request = ExportRequest(model=parent.torch_model.eval(), example=ctx.example(2), input_names=ctx.input_names,
                                folder=folder, options=self.format.options, run=ctx.run,
                                dynamic_axes=ctx.dynamic_axes)
        with signals_held():
            exported = self.format.plugin.export(request)
        return _artifact(self, ctx, parent.artifact, exported, "fp32", self.label, exported.info), parent.torch_model


@dataclass(eq=False)
class QuantizeStep(Step):
    """An fp32 artifact of a format to int8, by the format's own quantizer."""

    format: PlannedFormat | None = None
    refusable: bool = True
    plan_config: Any = None  # the recipe's quantize section, as JSON

    def config(self) -> Any:
        return {"format": self.format.name if self.format else None, "quantize": self.plan_config}

    def inputs(self, ctx: RunContext) -> Any:
        return {"calibration": ctx.data.fingerprint()}

    def announce(self, ctx: RunContext) -> None:
        assert self.format is not None
        config = ctx.plan.recipe.quantize
        assert config is not None
        calibrated = (f", {min(config.calibration.samples, len(ctx.data.calibration))} calibration samples"
                      if config.mode == "static" else "")
        activity(ctx.console,
                 f"quantize [bold]{self.name}[/] ({self.format.plugin.quantizer}, {config.mode}{calibrated})")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        assert self.format is not None and parent is not None
        config = ctx.plan.recipe.quantize
        assert config is not None
        plugin = self.format.plugin
        request = QuantizeRequest(
            source=parent.artifact, torch_model=parent.torch_model, folder=folder, config=config,
            calibration=ctx.data.calibration.head(config.calibration.samples).inputs, input_names=ctx.input_names,
            validation=_validation(self.format.name, parent.artifact, ctx), run=ctx.run)
        with signals_held():
            exported = plugin.quantize(request)
        readback = plugin.inspect(exported.path)
        # The label is read back from the artifact: int8 when enough of it is (MACs for static int8,
        # weights for dynamic, whose activations are quantized per call), else mixed.
        basis = "macs" if config.mode == "static" else "weights"
        share = readback.int8_macs_share if basis == "macs" else readback.int8_weights_share
        label = "int8" if share >= config.min_int8_share else "mixed"  # NaN (nothing weighted): mixed
        chosen = {"mode": config.mode, "mode_chosen_because": ctx.plan.quantize_mode_reason} \
            if ctx.plan.quantize_mode_reason else {"mode": config.mode}
        info = {**exported.info, **chosen, "int8_macs_share": _rounded(readback.int8_macs_share),
                "int8_weights_share": _rounded(readback.int8_weights_share), "left_in_float": readback.float_ops,
                "recurrent_in_float": readback.recurrent_in_float,
                "label": {"precision": label, "basis": f"int8_{basis}_share", "share": _rounded(share),
                          "min_int8_share": config.min_int8_share}}
        name = self.name if label == "int8" else self.name.replace(".int8.", f".{label}.")
        artifact = _artifact(self, ctx, parent.artifact, exported, label, f"quantize.{plugin.quantizer}", info)
        return dataclasses.replace(artifact, name=name), parent.torch_model


@dataclass(eq=False)
class Fp16Step(Step):
    """An fp32 artifact of a format to fp16, by the format's own float16 conversion."""

    format: PlannedFormat | None = None
    refusable: bool = True

    def config(self) -> Any:
        return {"format": self.format.name if self.format else None, "precision": "fp16"}

    def announce(self, ctx: RunContext) -> None:
        activity(ctx.console, f"fp16 [bold]{self.name}[/]")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        assert self.format is not None and parent is not None
        request = Fp16Request(source=parent.artifact, torch_model=parent.torch_model.eval(), example=ctx.example(2),
                              folder=folder, input_names=ctx.input_names, run=ctx.run)
        with signals_held():
            exported = self.format.plugin.to_fp16(request)
        return _artifact(self, ctx, parent.artifact, exported, "fp16", self.label, exported.info), parent.torch_model

@dataclass(eq=False)
class Int4Step(Step):
    """An fp32 artifact of a format to 4-bit weights, by the format's own weight compression."""

    format: PlannedFormat | None = None
    refusable: bool = True
    plan_config: Any = None  # the recipe's quantize.int4, as JSON

    def config(self) -> Any:
        return {"format": self.format.name if self.format else None, "int4": self.plan_config}

    def inputs(self, ctx: RunContext) -> Any:
        return {"calibration": ctx.data.fingerprint()} if self.plan_config.get("awq") or \
            self.plan_config.get("scale_estimation") else None

    def announce(self, ctx: RunContext) -> None:
        activity(ctx.console, f"int4 weights [bold]{self.name}[/] (groups of {self.plan_config['group_size']})")

    def build(self, parent: Built | None, folder: Path, ctx: RunContext) -> tuple[Artifact, Any]:
        assert self.format is not None and parent is not None
        config = ctx.plan.recipe.quantize
        assert config is not None
        request = Int4Request(source=parent.artifact, torch_model=parent.torch_model.eval(), example=ctx.example(2),
                              folder=folder, input_names=ctx.input_names, run=ctx.run, config=config.int4,
                              calibration=ctx.data.calibration.head(config.int4.samples).inputs)
        with signals_held():
            exported = self.format.plugin.to_int4_weights(request)
        artifact = _artifact(self, ctx, parent.artifact, exported, "int4_weights", self.label, exported.info)
        return artifact, parent.torch_model


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _validation(format_name: str, source: Artifact, ctx: RunContext) -> Any:
    """What accuracy-aware int8 scores candidates with: the calibration split, never the test split."""
    config = ctx.plan.recipe.quantize
    if config is None or config.max_accuracy_drop is None:
        return None
    from compress.accuracy import Validation
    from compress.budget import Budget
    from compress.verify import reference_outputs

    metric = ctx.plan.metric
    if ctx.data.calibration.y is None and metric.needs_labels:
        raise InputError("max_accuracy_drop needs labelled calibration data", file=ctx.file,
                         field="quantize.max_accuracy_drop")
    reference = None
    if not metric.needs_labels:
        if ctx.calibration_reference is None:  # once for every format
            assert ctx.original is not None
            ctx.calibration_reference = reference_outputs(ctx.original, ctx.data.calibration.inputs)
        reference = ctx.calibration_reference
    def progress(line: str) -> None:
        from rich.markup import escape

        # layer names are the model's own: shown as written, never read as markup
        activity(ctx.console, f"accuracy-aware {format_name}: {escape(line)}")  # run.log has it too

    return Validation(x=ctx.data.calibration.inputs, y=ctx.data.calibration.y, metric=metric,
                      budget=Budget.parse(config.max_accuracy_drop, metric.lower_is_better),
                      runtime=ctx.plan.format(format_name).runtimes[0], run=ctx.run,
                      reference=reference, input_transpose=source.attributes.get("input_transpose"),
                      max_trials=config.search.max_trials, max_seconds=config.search.max_seconds, progress=progress)


# --- the steps of a plan -----------------------------------------------------------------------

@dataclass
class Flow:
    """A plan's steps, in the order they run."""

    steps: list[Step] = field(default_factory=list)
    final: Step | None = None  # the last torch step


def plan_steps(plan: Plan) -> Flow:
    original = OriginalStep(label="original", name="original")
    steps: list[Step] = [original]
    current: Step = original
    for stage in plan.stages:
        label = stage.name if sum(s.name == stage.name for s in plan.stages) == 1 else f"{stage.name}-{stage.index}"
        plugin_libraries = tuple(getattr(stage.plugin, "libraries", ()))
        current = StageStep(label=label, name=label, parent=current, libraries=("torch", *plugin_libraries),
                            stage=stage)
        steps.append(current)
    sources = [original] if current is original else [original, current]
    exports: dict[tuple[str, int], ExportStep] = {}
    for planned in plan.formats:
        for position, source in enumerate(sources):
            step = ExportStep(label=f"export.{planned.name}", name=f"{source.name}.{planned.name}", parent=source,
                              libraries=tuple(planned.plugin.libraries), format=planned)
            exports[(planned.name, position)] = step
            steps.append(step)
    config = plan.recipe.quantize
    for precision in config.precisions() if config is not None else []:
        for planned in plan.formats:
            export = exports[(planned.name, len(sources) - 1)]
            libraries = tuple(planned.plugin.quantize_libraries)
            if precision == "fp16":
                steps.append(Fp16Step(label=f"fp16.{planned.name}", name=f"{current.name}.fp16.{planned.name}",
                                      parent=export, libraries=libraries, format=planned))
                continue
            if precision == "int4_weights":
                assert config is not None
                steps.append(Int4Step(label=f"int4_weights.{planned.name}",
                                      name=f"{current.name}.int4_weights.{planned.name}", parent=export,
                                      libraries=libraries, format=planned, plan_config=config.int4.model_dump()))
                continue
            assert config is not None
            # the int8 step's key holds int8's options only: asking for fp16 or int4 beside it reuses it
            steps.append(QuantizeStep(
                label=f"quantize.{planned.name}", name=f"{current.name}.int8.{planned.name}",
                parent=export, libraries=libraries, format=planned,
                plan_config=config.model_dump(mode="json", exclude={"precision", "int4"})))
    return Flow(steps=steps, final=current)

