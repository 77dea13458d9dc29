"""The calling convention every format exports: tensors in by position (the recipe's input order),
one tensor out (the recipe's `model.output`). Models with named inputs (Hugging Face's input_ids,
attention_mask, ...) or dict, tuple and ModelOutput results are wrapped in `Adapted`, which torch
artifacts rebuild through `adapted` (their factory), so a pruned model reloads in the same shape.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch


def select_output(value: Any, output: str | int | None) -> torch.Tensor:
    """The task's tensor of a model's result: a tensor as it is; by name from a dict or ModelOutput;
    by index from a tuple or list (or a dict's tensors in order); the first tensor when unnamed."""
    if isinstance(value, torch.Tensor):
        if output not in (None, 0):
            raise ValueError("the model returns one tensor; model.output %r names another" % (output,))
        return value
    if isinstance(value, dict):  # ModelOutput is a dict too
        tensors = {k: v for k, v in value.items() if isinstance(v, torch.Tensor)}
        if isinstance(output, str):
            if output not in tensors:
                raise ValueError("the model returns no output %r; it returns %s"
                                 % (output, ", ".join(tensors) or "none"))
            return tensors[output]
        chosen = list(tensors.values())
    elif isinstance(value, (tuple, list)):
        if isinstance(output, str):
            raise ValueError("the model returns a %s, whose outputs have no names; give model.output as an index"
                             % type(value).__name__)
        chosen = [v for v in value if isinstance(v, torch.Tensor)]
    else:
        raise ValueError("the model returns %s, not a tensor, a tuple or a dict of tensors" % type(value).__name__)
    index = output or 0
    if index >= len(chosen):
        raise ValueError("model.output %d: the model returns %d tensor(s)" % (index, len(chosen)))
    return chosen[index]


class Adapted(torch.nn.Module):
    """`model` called with the recipe's inputs (by keyword when its forward names them all, else by
    position), returning the one output the task reads. Caches that decoders return for generation
    are switched off (`use_cache=False`): an exported graph returns tensors only."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output: str | int | None = None) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output = output
        try:
            parameters = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        self.by_keyword = all(name in parameters for name in self.input_names)
        self.no_cache = "use_cache" in parameters

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        extra: dict[str, Any] = {"use_cache": False} if self.no_cache else {}
        if self.by_keyword:
            value = self.model(**dict(zip(self.input_names, tensors)), **extra)
        else:
            value = self.model(*tensors, **extra)
        return select_output(value, self.output)


def adapted(factory: str, kwargs: dict[str, Any], input_names: list[str], output: str | int | None = None,
            source_folder: str | None = None) -> Adapted:
    """Build the inner model from its factory (imported from `source_folder` or an installed package)
    and wrap it. The torch backend is this file's sibling, wherever the device side was copied."""
    import importlib
    import importlib.util

    if "." in __name__:  # installed: compress.runtimes.backends.torch
        sibling = importlib.import_module(__name__.rpartition(".")[0] + ".torch")
    else:  # copied to a device as loose files
        spec = importlib.util.spec_from_file_location("_compress_backend_torch_files",
                                                      Path(__file__).with_name("torch.py"))
        assert spec is not None and spec.loader is not None
        sibling = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sibling)
    make = sibling.import_object(factory, Path(source_folder) if source_folder else None)
    return Adapted(make(**kwargs), input_names, output)
