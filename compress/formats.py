"""Formats as a library: export a torch model, or quantize an fp32 file, with any installed format
plugin, the way a run does (for scripts, benchmarks and tests; a recipe needs none of this)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress import registry
from compress.artifact import Artifact
from compress.contracts import ExportRequest, Fp16Request, Int4Request, QuantizeRequest

if TYPE_CHECKING:
    import numpy as np
    import torch

    from compress.contracts import Exported, Validation


def plugin(name: str) -> Any:
    """An installed format plugin, ready to use (its libraries checked)."""
    return registry.require("compress.formats", name, field="format")()


def export(name: str, model: torch.nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], folder: Path, *,
           input_names: tuple[str, ...] | list[str] = ("input",), options: Any = None) -> Exported:
    """Export `model` to format `name` inside `folder` (made if needed)."""
    from compress.sessions import run_outputs

    folder.mkdir(parents=True, exist_ok=True)
    example = example if isinstance(example, tuple) else (example,)
    return plugin(name).export(ExportRequest(model=model.eval(), example=example, input_names=list(input_names),
                                             folder=folder, options=options, run=run_outputs))


def quantize(name: str, source: Path, torch_model: torch.nn.Module | None, folder: Path, config: Any,
             calibration: np.ndarray | dict[str, np.ndarray], *, input_names: tuple[str, ...] | list[str] = ("input",),
             attributes: dict[str, Any] | None = None, validation: Validation | None = None) -> Exported:
    """Quantize the fp32 file (or folder) `source` of format `name` inside `folder`, as the recipe's
    `quantize` section `config` says; `torch_model` is the model it was exported from."""
    from compress.sessions import run_outputs

    if not isinstance(calibration, dict):  # one input's samples
        calibration = {next(iter(input_names)): calibration}
    if config.mode == "auto":  # a format's quantizer makes static or dynamic int8: choose, as a run does
        if torch_model is None:
            raise ValueError("quantize.mode auto needs the torch model to choose static or dynamic int8")
        import numpy
        import torch

        from compress.int8_mode import choose_mode

        mode, _ = choose_mode(torch_model, tuple(torch.from_numpy(numpy.asarray(a[:1])) for a in calibration.values()))
        config = config.model_copy(update={"mode": mode})
    folder.mkdir(parents=True, exist_ok=True)
    artifact = Artifact(id="source", name=source.name, format=name, precision="fp32", path=source, sha256="",
                        lineage=("source",), attributes=attributes or {})
    return plugin(name).quantize(QuantizeRequest(
        source=artifact, torch_model=torch_model, folder=folder, config=config, calibration=calibration,  # type: ignore[arg-type]
        input_names=list(input_names), validation=validation, run=run_outputs))


def _exported_source(name: str, precision: str, source: Exported, folder: Path) -> Any:
    """The Artifact a conversion step starts from, for what `export` made (its info and attributes)."""
    if precision not in plugin(name).quantize_modes:
        raise ValueError(f"format {name!r} makes no {precision}")
    folder.mkdir(parents=True, exist_ok=True)
    return Artifact(id="source", name=source.path.name, format=name, precision="fp32", path=source.path, sha256="",
                    lineage=("source",), info=source.info, attributes=source.attributes)


def to_fp16(name: str, source: Exported, torch_model: torch.nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...],
            folder: Path, *, input_names: tuple[str, ...] | list[str] = ("input",)) -> Exported:
    """fp16 of what `export` made (`source`, its Exported) with format `name`'s own conversion,
    inside `folder`; `torch_model` and `example` are what it was exported from."""
    from compress.sessions import run_outputs

    artifact = _exported_source(name, "fp16", source, folder)
    return plugin(name).to_fp16(Fp16Request(
        source=artifact, torch_model=torch_model.eval(), example=example if isinstance(example, tuple) else (example,),
        folder=folder, input_names=list(input_names), run=run_outputs))


def to_int4_weights(name: str, source: Exported, torch_model: torch.nn.Module,
                    example: torch.Tensor | tuple[torch.Tensor, ...], folder: Path, config: Any,
                    calibration: dict[str, np.ndarray], *, input_names: tuple[str, ...] | list[str] = ("input",)
                    ) -> Exported:
    """4-bit weights from what `export` made (`source`) with format `name`'s own weight compression,
    as `config` (a quantize.int4 section: compress.recipe.Int4Config) says."""
    from compress.sessions import run_outputs

    artifact = _exported_source(name, "int4_weights", source, folder)
    return plugin(name).to_int4_weights(Int4Request(
        source=artifact, torch_model=torch_model.eval(), example=example if isinstance(example, tuple) else (example,),
        folder=folder, input_names=list(input_names), run=run_outputs, config=config, calibration=calibration))
