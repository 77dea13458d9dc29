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


# --- formats and runtimes, as the pipeline calls them ------------------------------------------------

def export_with(format_name: str, model: Any, example: Any, folder: Path, input_name: str = "input",
                options: Any = None) -> Any:
    """Export a torch model with a format plugin, as the pipeline does; returns its Exported."""
    from compress import formats

    return formats.export(format_name, model, example, folder, input_names=[input_name], options=options)


def quantize_with(format_name: str, source: Path, torch_model: Any, folder: Path, config: Any, calibration: Any,
                  input_name: str = "input", attributes: dict[str, Any] | None = None, validation: Any = None) -> Any:
    """Quantize an fp32 file of a format with its plugin, as the pipeline does; returns its Exported."""
    from compress import formats

    return formats.quantize(format_name, source, torch_model, folder, config, calibration, input_names=[input_name],
                            attributes=attributes, validation=validation)


def load_backend(runtime: str, path: Path | str, threads: int = 1) -> Any:
    """A runtime's backend in this process (the device agent's own)."""
    from compress.runtimes.agent import load_backend as load

    return load(runtime, str(path), threads)


def digits_onnx(path: Path) -> Path:
    """A small digits CNN (seeded) exported to ONNX at `path`."""
    import shutil
    import tempfile

    import torch

    from compress.zoo.digits import DigitsCNN

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        exported = export_with("onnx", DigitsCNN(width=8).eval(), torch.rand(2, 1, 8, 8), Path(scratch))
        shutil.copy(exported.path, path)
    return path


def measure(target: Any, request: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
    """One measurement on a target from a protocol-1 request as JSON; the response as JSON."""
    from compress.runtimes.protocol import Request

    return target.measure(Request.from_json({"protocol": 1, **request}), timeout_s).to_json()
