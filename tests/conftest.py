"""Shared fixtures: small, fast recipes and a CLI runner."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from compress.cli import main

# The quickstart, shrunk so a whole run takes seconds: a narrow CNN, few epochs, short timings.
SMALL_RECIPE: dict[str, Any] = {
    "schema_version": 1,
    "name": "small",
    "seed": 0,
    "model": {
        "factory": "compress.zoo.digits:DigitsCNN",
        "kwargs": {"width": 8},
        "input": {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"},
        "train": {"epochs": 3, "lr": 0.01, "batch_size": 64},
    },
    "data": {"source": "digits", "batch_size": 64},
    "task": {"kind": "classification", "metric": "top1"},
    "stages": [
        {"prune": {"importance": "l2", "target_macs_ratio": 0.6, "iterative_steps": 2}},
        {"distill": {"epochs": 1, "temperature": 4.0, "alpha": 0.7}},
    ],
    "quantize": {"precision": "int8", "calibration": {"samples": 32, "method": "minmax"}},
    "export": ["onnx"],
    "verify": {
        "runtimes": ["torch", "onnxruntime"],
        "targets": ["local"],
        "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "threads": [1]},
    },
}


def small_recipe(**changes: Any) -> dict[str, Any]:
    """A deep copy of SMALL_RECIPE with top-level keys replaced (None deletes a key)."""
    recipe = copy.deepcopy(SMALL_RECIPE)
    for key, value in changes.items():
        if value is None:
            recipe.pop(key, None)
        else:
            recipe[key] = value
    return recipe


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., Path]:
    """Write a recipe (dict or raw YAML text) into tmp_path and return its path."""

    def write(content: dict[str, Any] | str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke the `compress` command in-process; stderr is kept apart from stdout."""
    runner = CliRunner()

    def invoke(*args: Any) -> Result:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke
