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

# --- tests that must not skip where CI runs them --------------------------------------------------
# A test marked `sshd` (a real OpenSSH server) or using the device venv (marked `device_venv` here)
# skips, with its reason, on a machine without them. Where COMPRESS_REQUIRE names the marker
# (.ci/run sets COMPRESS_REQUIRE=sshd,device_venv), such a skip is a failure: CI cannot go green
# without having run them.
REQUIRE_ENV = "COMPRESS_REQUIRE"


def required_markers() -> set[str]:
    import os

    return {name.strip() for name in os.environ.get(REQUIRE_ENV, "").split(",") if name.strip()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "device_python" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device_venv)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    must = sorted(name for name in required_markers() if item.get_closest_marker(name) is not None)
    if must:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped where it must run ({REQUIRE_ENV} requires {', '.join(must)}): {reason}")


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


# --- third-party plugins, installed as a user would ---------------------------------------------------

def install_plugin(source: Path, root: Path) -> Path:
    """Build a plugin package from a copy of `source` (the source folder stays clean) and install it
    with pip --target into a folder under `root`, never into the virtual environment; returns it."""
    import shutil
    import subprocess
    import sys

    copy = root / "src"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--target", str(target), str(copy)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def plugin_env(plugin_path: Path | None) -> dict[str, str]:
    """The environment of a fresh `compress` with a plugin folder on PYTHONPATH."""
    import os

    env = dict(os.environ)
    paths = [str(plugin_path)] if plugin_path is not None else []
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env["COLUMNS"] = "300"  # rich wraps tables to the terminal width; keep each row on one line
    env["NO_COLOR"] = "1"
    return env


def compress(plugin_path: Path | None, *args: object, cwd: Path, timeout: float = 300) -> Any:
    """`compress ARGS...` in a fresh interpreter, with the plugin folder on PYTHONPATH."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], cwd=cwd,
                          env=plugin_env(plugin_path), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def device_python() -> Path:
    """A separate venv, as a device has: numpy + onnxruntime + ai-edge-litert only (no compress, no
    torch). Cached by the constraints' hash."""
    import fcntl
    import hashlib
    import os
    import shutil
    import subprocess
    import sys

    constraints = Path(__file__).resolve().parent.parent / "constraints.txt"
    packages = ["numpy", "onnxruntime", "ai-edge-litert"]
    key = hashlib.sha256((constraints.read_text() + sys.version + " ".join(packages)).encode()).hexdigest()[:12]
    venv = Path(os.environ.get("TMPDIR", "/tmp")) / f"compress-test-device-{key}"
    python = venv / "bin" / "python"
    # pytest-xdist workers share it: one builds it while the others wait on the lock.
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *packages],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot build the device venv: {done.stderr.strip().splitlines()[-1:]}")
            (venv / ".complete").write_text("")
    return python


def printed_run(stdout: str) -> Path:
    """The run folder `compress run` printed (`results: <folder>/results.json`): found by the id the
    run reported, never by sorting folder names (run ids end in a random suffix)."""
    lines = [line for line in stdout.splitlines() if line.startswith("results: ")]
    assert len(lines) == 1, f"expected one 'results: ' line, got {lines}: {stdout[-2000:]}"
    return Path(lines[0].removeprefix("results: ")).parent


def printed_results(stdout: str) -> dict[str, Any]:
    """results.json of the run `compress run` printed."""
    import json

    return json.loads((printed_run(stdout) / "results.json").read_text())


def eventually(condition: Callable[[], bool], what: str, within_s: float = 60.0) -> None:
    """Wait for something another process does (a kill, a cleanup) with a generous bound: a test
    never asserts how fast the machine is, only that it happens."""
    import time

    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {within_s:g} s"
        time.sleep(0.1)


def kept_outputs(folder: Path, artifact: str, runtime: str, target: str = "local") -> Any:
    """The outputs a measurement kept (`verify/<artifact>.<runtime>.<target>.npz` in a run folder)."""
    import numpy as np

    with np.load(folder / "verify" / f"{artifact}.{runtime}.{target}.npz", allow_pickle=False) as archive:
        return archive["output_0"]


def plain_cosine(outputs: Any, reference: Any) -> float:
    """Mean per-sample cosine, written out in plain numpy (independent of compress.tasks); for live
    outputs only: it refuses zero vectors rather than guess what they score."""
    import numpy as np

    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    assert (norms > 0).all(), "a zero output vector: not a live model"
    return float(np.mean((a * b).sum(axis=1) / norms))
