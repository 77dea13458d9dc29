"""Every plugin kind's contract, in one place.

A plugin is found through its entry-point group and checked against its contract when the
registry loads it: a plugin missing a member is a one-line error naming its package.

| group               | contract       | what it is                                                      |
|---------------------|----------------|-----------------------------------------------------------------|
| compress.stages     | Stage          | a torch -> torch transform with a pydantic Config               |
| compress.formats    | Format         | one deployment format: layout, export, quantize, read-back      |
| compress.runtimes   | RuntimeBackend | the device side's backend for one runtime (compress.runtimes)   |
| compress.targets    | Target         | where the agent runs (compress.runtimes.targets)                |
| compress.datasets   | Dataset        | a data source: (config, DataContext) -> Splits                  |
| compress.metrics    | Metric         | a task metric that says its direction and whether it needs labels|

Format plugins (compress.exporters.<format>) import from the core only this module and
compress.errors; the device side imports nothing of the core and meets its contracts by shape.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import logging

    import numpy as np
    import torch
    from pydantic import BaseModel
    from rich.console import Console

    from compress.data import Splits
    from compress.plan import Plan
    from compress.runtimes.protocol import Request, Response

# The format of the models the torch stages pass along: the pipeline's own medium, not a
# deployment format (those are plugins, and the core never names one).
SOURCE_FORMAT = "torch"


def match_names(names: list[str], patterns: list[str]) -> list[str]:
    """Names matched by any of the globs (`quantize.ignore`, `prune.ignore`), in the names' order."""
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


# --- stages ----------------------------------------------------------------------------------------

@dataclass
class StageContext:
    """What a stage sees besides the model it transforms."""

    plan: Plan
    data: Splits
    original: torch.nn.Module  # the user's model, as loaded: the default teacher and reference
    console: Console
    log: logging.Logger
    seed: int

    @property
    def file(self) -> str:
        return str(self.plan.path)

    @property
    def task_kind(self) -> str:
        return self.plan.recipe.task.kind

    def example_input(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Samples of the calibration split: one tensor per model input."""
        return self.data.calibration.head(batch).tensors()


@dataclass
class StageResult:
    model: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    """Built with its validated Config; `run` returns the new model and what it measured. The
    pipeline owns saving, hashing and caching. `libraries`: distributions whose versions key the
    stage's cache entry (torch is always one)."""

    Config: ClassVar[type[BaseModel]]
    libraries: ClassVar[tuple[str, ...]]

    def __init__(self, config: Any) -> None: ...

    def run(self, model: torch.nn.Module, ctx: StageContext) -> StageResult: ...


# --- formats ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightedOp:
    """One op of an artifact that holds weights, as read back from the artifact itself."""

    name: str
    op_type: str
    macs: int  # multiply-accumulates per sample (dynamic dimensions taken as 1)
    weights: int  # weight elements
    int8_weights: bool  # its weights are stored in int8
    int8_compute: bool  # it multiplies in int8 (quantized activations, or a kernel that quantizes them per call)
    recurrent: bool = False  # an LSTM / GRU / RNN layer (or a piece of one)


@dataclass(frozen=True)
class Readback:
    """What an artifact computes in int8 and what stayed in float, read back from the artifact."""

    ops: tuple[WeightedOp, ...] = ()

    @property
    def int8_macs_share(self) -> float:
        """The share of the weighted ops' MACs computed in int8 (NaN when the artifact has none)."""
        total = sum(op.macs for op in self.ops)
        return sum(op.macs for op in self.ops if op.int8_compute) / total if total else float("nan")

    @property
    def int8_weights_share(self) -> float:
        """The share of the weighted ops' weight elements stored in int8 (NaN when it has none)."""
        total = sum(op.weights for op in self.ops)
        return sum(op.weights for op in self.ops if op.int8_weights) / total if total else float("nan")

    @property
    def float_ops(self) -> dict[str, list[str]]:
        """Weighted ops that still multiply in float, by op type."""
        found: dict[str, list[str]] = {}
        for op in self.ops:
            if not op.int8_compute:
                found.setdefault(op.op_type, []).append(op.name)
        return found

    @property
    def recurrent_in_float(self) -> dict[str, list[str]]:
        return {kind: names for kind, names in self.float_ops.items()
                if any(op.recurrent and op.op_type == kind for op in self.ops)}


def loses_a_multiplier(values: Any) -> bool:
    """Whether per-tensor 8-bit quantization of a constant a model multiplies by (a per-channel scale,
    LayerScale's gamma) would lose more than half of one of its non-zero values: 256 levels over
    [min(0, lowest), max(0, highest)], as ONNX Runtime and PT2E store such a constant. A multiplier
    of 1 beside one of 1000 becomes 0, and its channel with it (a weight of a conv or matmul is
    quantized per channel and is not one of these)."""
    import numpy as np

    constant = np.asarray(values, dtype=np.float64).ravel()
    if constant.size < 2 or not np.isfinite(constant).all():
        return False
    low, high = min(0.0, float(constant.min())), max(0.0, float(constant.max()))
    if high == low:
        return False
    scale = (high - low) / 255
    zero = np.round(-low / scale)
    restored = (np.clip(np.round(constant / scale) + zero, 0, 255) - zero) * scale
    kept = constant != 0
    return bool((np.abs(restored[kept] - constant[kept]) > 0.5 * np.abs(constant[kept])).any())


def first_layers(ops: Sequence[WeightedOp], count: int, max_macs_share: float) -> list[str]:
    """The first-layer policy (`quantize.first_layers`): the names of the first `count` layers that
    multiply (MACs > 0; an embedding lookup is not one), in the order given (the order the input
    reaches them), stopping before the layers kept so far would hold more than `max_macs_share` of
    all the layers' MACs. Those layers see the raw input; int8 costs most there for least gain."""
    layers = [op for op in ops if op.macs > 0]
    total = sum(op.macs for op in layers)
    chosen: list[str] = []
    held = 0
    for op in layers[:count]:
        held += op.macs
        if held > max_macs_share * total:
            break
        chosen.append(op.name)
    return chosen


@dataclass
class Exported:
    """What a format's export or quantize wrote: the artifact's path (a file, or a folder) inside the
    folder it was given, and what it measured. `attributes` travel to every artifact made from it
    (e.g. input_transpose: the axes NCHW data must be transposed by for a channels-last model)."""

    path: Path
    info: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None  # when not the step's own (fp16 weights from an fp32 export)
    attributes: dict[str, Any] = field(default_factory=dict)


class RunOutputs(Protocol):
    """Runs a model file on a runtime in this process: (runtime, path, feeds) -> outputs."""

    def __call__(self, runtime: str, path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class ExportRequest:
    model: torch.nn.Module  # in eval mode
    example: tuple[torch.Tensor, ...]  # one tensor per input, batch of 2
    input_names: list[str]
    folder: Path  # write the artifact inside it
    options: Any  # the format's validated Config, or None
    run: RunOutputs  # to check the artifact against torch with the runtime that will load it
    # per input, the axes whose size may change ({0: "batch", 1: "sequence"}); None: the batch axis
    dynamic_axes: list[dict[int, str]] | None = None

    def axes(self) -> list[dict[int, str]]:
        return self.dynamic_axes if self.dynamic_axes is not None else [{0: "batch"} for _ in self.example]


class SearchResult(Protocol):
    kept_in_float: list[str]

    def as_info(self) -> dict[str, Any]: ...


class Validation(Protocol):
    """What accuracy-aware int8 scores candidates with (the calibration split, never the test split)."""

    x: dict[str, np.ndarray]  # samples per input, in the model's order
    y: np.ndarray | None
    metric: Metric
    budget: Any  # .value, .relative, .lower_is_better (compress.budget.Budget)

    def score(self, path: Path) -> float: ...

    def met(self, reference: float, score: float) -> bool: ...

    def search(self, quantize: Callable[[list[str], Path], None], candidates: list[str], reference: float,
               dest: Path, ranking: Callable[[Path], list[str]] | None = None) -> SearchResult:
        """Quantize with every candidate; if the budget is missed, keep the most harmful candidates in
        float, as few as hold it, within the recipe's search bounds. `quantize(excluded, path)` writes
        one candidate; `ranking(int8 path)` ranks the candidates most harmful first in one pass, where
        the format can (else each is quantized alone). The best found is written to `dest`."""
        ...

    def report(self, reference: float, score: float, kept_in_float: list[str],
               steps: list[dict[str, Any]]) -> SearchResult:
        """A result for a search the format's own tool ran (NNCF's accuracy control)."""
        ...


@dataclass
class QuantizeRequest:
    source: Any  # the fp32 Artifact of this format
    torch_model: torch.nn.Module  # the torch model it was exported from (quantizers that work on torch)
    folder: Path
    config: Any  # the recipe's QuantizeConfig
    calibration: dict[str, np.ndarray]  # samples of the calibration split, per input in the model's order
    input_names: list[str]
    validation: Validation | None  # accuracy-aware int8 when set
    run: RunOutputs


@dataclass
class Fp16Request:
    """fp16 from this format's fp32 artifact (or from the torch model, for a converter that starts
    there): float32 inputs and outputs kept, weights in float16."""

    source: Any  # the fp32 Artifact of this format
    torch_model: torch.nn.Module  # the torch model it was exported from
    example: tuple[torch.Tensor, ...]  # one tensor per input, batch of 2
    folder: Path
    input_names: list[str]
    run: RunOutputs


def outputs_on_example(run: RunOutputs, runtime: str, path: Path, model: torch.nn.Module,
                       example: tuple[torch.Tensor, ...], input_names: list[str], what: str,
                       field: str) -> tuple[np.ndarray, np.ndarray]:
    """The artifact's first output on the example, run by `runtime` as verify will, and the torch
    model's; an artifact its runtime cannot load or run is the step's failure (`what` on `field`)."""
    import torch

    from compress.errors import tool_failure

    feeds = {name: t.numpy() for name, t in zip(input_names, example, strict=True)}
    try:
        got = run(runtime, path, feeds)[0]
    except Exception as exc:
        raise tool_failure(f"running the {what} on {runtime}", exc, field=field) from None
    with torch.no_grad():
        want = model(*example)
    return got, (want if isinstance(want, torch.Tensor) else want[0]).numpy()


MIN_LOWER_PRECISION_SHARE = 0.5  # of the weights, to label an artifact fp16 or int4_weights


def fp16_result(path: Path, fmt: str, weights: tuple[int, int], got: np.ndarray, want: np.ndarray,
                info: dict[str, Any]) -> Exported:
    """An fp16 artifact, labelled fp16 only when it holds what that says: at least half of its float
    weight bytes in float16, read back from the file (`weights`: float16 bytes, all float bytes).
    Its outputs on the example are compared with torch's here; verify holds them to `parity.fp16`."""
    return _labelled(path, fmt, "fp16", weights, "of the weight bytes in float32", "float16", "fp16_weights_share",
                     got, want, info)


def int4_weights_result(path: Path, fmt: str, weights: tuple[int, int], got: np.ndarray, want: np.ndarray,
                        info: dict[str, Any], why: str = "") -> Exported:
    """A 4-bit weight-only artifact, labelled int4_weights only when at least half of its weights
    (elements, read back from the file: `weights` = 4-bit elements, all weight elements) are stored
    in 4 bits; the tools compress the weights of MatMul / fully connected layers, so a convolutional
    model is refused here rather than labelled what it is not; `why` says where the rest stayed."""
    return _labelled(path, fmt, "int4_weights", weights, "of the weights in 8 bits or more", "4-bit",
                     "int4_weights_share", got, want, info, why)


def _labelled(path: Path, fmt: str, precision: str, weights: tuple[int, int], left: str, stored: str, key: str,
              got: np.ndarray, want: np.ndarray, info: dict[str, Any], why: str = "") -> Exported:
    import numpy as np

    from compress.errors import StageError

    lower, total = weights
    share = lower / total if total else 0.0
    if share < MIN_LOWER_PRECISION_SHARE:
        raise StageError(f"{fmt} {precision} conversion left {1 - share:.0%} {left} (at least "
                         f"{MIN_LOWER_PRECISION_SHARE:.0%} must be {stored} to call it {precision})"
                         + (f": {why}" if why else ""), field="quantize")
    if not np.isfinite(got).all():
        raise StageError(f"{fmt} {precision} model gives non-finite outputs (NaN or inf) on the example",
                         field="quantize")
    got64, want64 = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
    norms = float(np.linalg.norm(got64) * np.linalg.norm(want64))
    cosine = float(got64 @ want64 / norms) if norms > 0 else float("nan")
    return Exported(path=path, precision=precision, info={
        **info, key: round(share, 4), "weights_counted": total,
        "max_abs_error_vs_torch": float(np.abs(got64 - want64).max()), "cosine_vs_torch_on_example": cosine})


@dataclass
class Int4Request:
    """4-bit weight-only compression of this format's fp32 artifact (or of the torch model, for a
    converter that starts there), as the recipe's `quantize.int4` says; `calibration` feeds the
    data-aware methods (AWQ, scale estimation) where the format's tool has them."""

    source: Any  # the fp32 Artifact of this format
    torch_model: torch.nn.Module
    example: tuple[torch.Tensor, ...]  # one tensor per input, batch of 2
    folder: Path
    input_names: list[str]
    run: RunOutputs
    config: Any  # the recipe's Int4Config
    calibration: dict[str, np.ndarray]


class Format(Protocol):
    """One deployment format, one plugin: everything about it lives in its folder
    (compress/exporters/<format>/: export, quantize, inspect, fp16).

    name:         the format, as the recipe's `export:` names it
    runtimes:     runtimes that load it; the first scores accuracy-aware int8 candidates
    suffixes:     file suffixes `compress bench` recognizes as this format ('.onnx')
    loads_code:   loading a file of this format runs code (benchmarking one needs --trust)
    requires / install_hint: import names its exporter needs, and the pip command for them
    libraries / quantize_libraries: distributions whose versions key its export / quantize steps
    Config:       pydantic options of its export (or None)
    quantizer:    the name of its quantizer ('' when it has none), recorded in the lineage
    quantize_modes: {precision: (modes)} it can make, e.g. {"int8": ("static", "dynamic"), "fp16": ("weights",)};
                  a format that makes fp16 has `to_fp16(Fp16Request) -> Exported` (FormatFolder: fp16.py),
                  one that makes int4_weights `to_int4_weights(Int4Request) -> Exported` (int4.py) and
                  may refuse options with `check_int4(config) -> [(option, reason)]`
    QuantizeOptions: pydantic options only its quantizer has (`quantize.per_format.<name>`), or None
    layer_int8:   {mode: {torch layer type: "int8" | "float" | "fails"}}: what its quantizer does with
                  layers it treats specially (recurrent ones), as measured; unlisted types are "int8"
    check_quantize(config): [(option, reason)] for each option of the recipe's quantize section its
                  tool cannot carry out; `compress validate` refuses the first
    """

    name: ClassVar[str]
    runtimes: ClassVar[tuple[str, ...]]
    suffixes: ClassVar[tuple[str, ...]]
    loads_code: ClassVar[bool]
    requires: ClassVar[tuple[str, ...]]
    install_hint: ClassVar[str]
    libraries: ClassVar[tuple[str, ...]]
    quantize_libraries: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[BaseModel] | None]
    quantizer: ClassVar[str]
    quantize_modes: ClassVar[dict[str, tuple[str, ...]]]
    QuantizeOptions: ClassVar[type[BaseModel] | None]
    layer_int8: ClassVar[dict[str, dict[str, str]]]

    def check_quantize(self, config: Any) -> list[tuple[str, str]]: ...

    def export(self, request: ExportRequest) -> Exported: ...

    def quantize(self, request: QuantizeRequest) -> Exported: ...

    def inspect(self, path: Path) -> Readback: ...

    def check_file(self, path: Path) -> None:
        """Refuse a file of this format that is unsafe or incomplete to load (ONNX external data
        outside its folder, an IR without its .bin), raising compress.errors.InputError."""
        ...


class FormatFolder:
    """The usual shape of a format plugin: its folder holds export.py (`export(request)`), quantize.py
    (`quantize(request)`), inspect.py (`readback(path)`), and where it makes them, fp16.py
    (`to_fp16(request)`) and int4.py (`to_int4_weights(request)`), imported only when used, so loading the
    plugin stays cheap. A subclass declares the Format members above and `check_file`."""

    def export(self, request: ExportRequest) -> Exported:
        return self._module("export").export(request)

    def quantize(self, request: QuantizeRequest) -> Exported:
        return self._module("quantize").quantize(request)

    def inspect(self, path: Path) -> Readback:
        return self._module("inspect").readback(path)

    def to_fp16(self, request: Fp16Request) -> Exported:
        return self._module("fp16").to_fp16(request)

    def to_int4_weights(self, request: Int4Request) -> Exported:
        return self._module("int4").to_int4_weights(request)

    def _module(self, name: str) -> Any:
        import importlib

        return importlib.import_module(f"{type(self).__module__}.{name}")


# --- the device side -------------------------------------------------------------------------------

class RuntimeBackend(Protocol):
    """A runtime's backend (compress/runtimes/backends/<name>.py): see that package's docstring."""

    name: ClassVar[str]
    install_hint: ClassVar[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def input_specs(self) -> list[tuple[str, list[int | None], str]]: ...


class Target(Protocol):
    """Where the device agent runs (docs/targets.md). Built from a spec by `compress.targets.resolve`
    (a class with `from_spec(spec)`, or one that takes no options); building one never connects.

    name:  the spec as shown in results (options after `?` left out: they may name key files).
    host:  the machine measured. Targets with the same host are measured one after another (a GPU
           run perturbs CPU timings on the same machine); different hosts in parallel.
    prepare():  connect once and check the device; raises compress.runtimes.targets.TargetError.
    measure(request, timeout_s):  one agent request with local paths; answers the agent's Response
           (status ok, failed, timeout, bad_input or incomplete), never raises for a failed
           measurement, and kills what it started at `timeout_s`.
    """

    name: str
    host: str

    def prepare(self) -> None: ...

    def measure(self, request: Request, timeout_s: float) -> Response: ...


# --- data and metrics ------------------------------------------------------------------------------

@dataclass
class DataContext:
    """What a data source needs to know of the recipe."""

    file: str  # the recipe, for error messages
    folder: Path  # paths in a recipe are relative to its folder
    input_shape: list[int]  # the first input's
    input_dtype: str
    allowed: list[Path] = field(default_factory=list)  # folders outside it the recipe lets inputs come from
    inputs: list[tuple[str, list[int], str]] = field(default_factory=list)  # every input: name, shape, dtype
    model_folder: Path | None = None  # a Hugging Face model's folder (its tokenizer), when the recipe has one

    def resolve_path(self, value: str, field: str = "data.path", what: str = "data file", kind: str = "file") -> Path:
        """An input the recipe names, under the path policy (compress.inputs.input_path): inside the
        recipe's folder or an allowed one, after symlinks; a regular file (or a folder)."""
        from compress.inputs import input_path

        return input_path(value, folder=self.folder, allowed=self.allowed, file=self.file, field=field, what=what,
                          kind=kind)


class Dataset(Protocol):
    def __call__(self, config: Any, ctx: DataContext) -> Splits: ...


@runtime_checkable
class Metric(Protocol):
    """`metric(outputs, labels, reference)` -> float. `reference` is the original model's outputs on
    the same samples (for metrics that compare against it). `lower_is_better` sets which way a drop
    runs for budgets, gates and baselines; `bounds` is the metric's range (None: unbounded)."""

    lower_is_better: bool
    needs_labels: bool
    bounds: tuple[float | None, float | None]

    def __call__(self, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None = None
                 ) -> float: ...


# --- checking a plugin against its contract ----------------------------------------------------------

_REQUIRED: dict[str, tuple[str, ...]] = {
    "stage": ("Config", "run"),
    "format": ("name", "runtimes", "suffixes", "loads_code", "libraries", "quantize_libraries", "quantizer",
               "quantize_modes", "QuantizeOptions", "layer_int8", "check_quantize", "export", "quantize", "inspect",
               "check_file"),
    "runtime": ("name", "install_hint", "run", "input_specs"),
    "target": ("prepare", "measure"),
    "dataset": ("__call__",),
    "metric": ("__call__", "lower_is_better", "needs_labels"),
}


def missing_members(kind: str, plugin: Any) -> list[str]:
    """The members of its contract that a plugin lacks (an empty list: it meets the contract)."""
    return [name for name in _REQUIRED.get(kind, ()) if not hasattr(plugin, name)]
