"""A Plan: a recipe validated in both phases, with every plugin and target it names resolved once.
Nothing after `load_recipe` looks a plugin up again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.contracts import SOURCE_FORMAT, DataContext

if TYPE_CHECKING:
    from pydantic import BaseModel

    from compress.contracts import Dataset, Format, Metric, Target
    from compress.recipe import Recipe


@dataclass(frozen=True)
class PlannedStage:
    index: int
    name: str
    plugin: type  # the Stage class
    config: BaseModel


@dataclass(frozen=True)
class PlannedFormat:
    index: int
    name: str
    plugin: Format
    options: BaseModel | None  # its export options


@dataclass
class Plan:
    path: Path
    recipe: Recipe
    raw: dict[str, Any]
    stages: list[PlannedStage]
    formats: list[PlannedFormat]  # what `export:` makes, in order
    runtimes: dict[str, type]  # verify.runtimes: name -> backend class, in order
    targets: list[Target]
    dataset: Dataset
    metric: Metric
    source: Format  # the format of the torch stages' models (SOURCE_FORMAT)
    loaders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # format -> runtimes that load it
    warnings: list[str] = field(default_factory=list)  # what validation found worth saying, not refusing
    quantize_mode_reason: str | None = None  # why quantize.mode auto chose what it did

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def file(self) -> str:
        return str(self.path)

    def resolve_path(self, value: str, field: str, what: str = "input file") -> Path:
        """An input the recipe names: relative to its folder, and inside it or a folder it allows."""
        return self.data_context().resolve_path(value, field=field, what=what)

    def data_context(self) -> DataContext:
        specs = self.recipe.model.input_specs
        spec = specs[0]
        allowed = [Path(p).expanduser() if Path(p).expanduser().is_absolute() else self.folder / p
                   for p in self.recipe.paths.allow_outside]
        return DataContext(file=self.file, folder=self.folder, input_shape=list(spec.shape), input_dtype=spec.dtype,
                           allowed=allowed, inputs=[(s.name, list(s.shape), s.dtype) for s in specs],
                           model_folder=self._model_folder(allowed))

    def _model_folder(self, allowed: list[Path]) -> Path | None:
        config = self.recipe.model.huggingface
        if config is None:
            return None
        from compress.hf import resolve_folder

        return resolve_folder(config.path, folder=self.folder, allowed=allowed, file=self.file,
                              field="model.huggingface.path")

    def format(self, name: str) -> Format:
        if name == SOURCE_FORMAT:
            return self.source
        return next(f.plugin for f in self.formats if f.name == name)

    def runtimes_for(self, format_name: str) -> list[str]:
        """The recipe's runtimes that load a format, in the recipe's order."""
        loading = self.loaders.get(format_name, ())
        return [name for name in self.runtimes if name in loading]


def loaders_of(format_name: str, format_plugin: Any, runtimes: dict[str, type]) -> tuple[str, ...]:
    """Runtimes that load a format: those its plugin names, and any runtime that says it loads it."""
    named = tuple(getattr(format_plugin, "runtimes", ()))
    extra = tuple(name for name, backend in runtimes.items()
                  if format_name in getattr(backend, "formats", ()) and name not in named)
    return named + extra


__all__ = ["SOURCE_FORMAT", "Plan", "PlannedFormat", "PlannedStage", "loaders_of"]
