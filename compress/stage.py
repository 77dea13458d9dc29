"""What a torch -> torch stage sees, and what it must provide.

A stage plugin is a class with a pydantic `Config`, built with its validated config, whose
`run(model, ctx)` returns the new model and what it measured. The pipeline owns saving, hashing
and caching, so a plugin is only the transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import logging

    import torch
    from pydantic import BaseModel
    from rich.console import Console

    from compress.data import Splits
    from compress.recipe import LoadedRecipe


@dataclass
class StageContext:
    recipe: LoadedRecipe
    data: Splits
    original: torch.nn.Module  # the user's model, as loaded: the default teacher and reference
    console: Console
    log: logging.Logger
    seed: int

    def example_input(self, batch: int = 1) -> torch.Tensor:
        import torch

        sample = torch.from_numpy(self.data.calibration.x[:batch])
        return sample.clone()


@dataclass
class StageResult:
    model: torch.nn.Module
    info: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: Any) -> None: ...

    def run(self, model: torch.nn.Module, ctx: StageContext) -> StageResult: ...
