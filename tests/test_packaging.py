"""The wheel: one top-level import package, `compress`; the quickstart runs from it installed outside
the repository; and the layer rules (import-linter contracts in pyproject.toml) hold and can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("compress", "exporters", "runtimes", "pyproject.toml", "setup.py", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (nothing is written into the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(item, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "-q", "-w", str(root / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = (root / "dist").glob("edge_compress-*.whl")
    return found


@pytest.fixture(scope="module")
def site(wheel: Path) -> Path:
    """The wheel installed into a folder of its own (its dependencies come from this environment)."""
    target = wheel.parent.parent / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           "--disable-pip-version-check", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", "NO_COLOR": "1"}


def test_the_wheel_adds_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"compress"}
    for expected in ("compress/exporters/onnx/__init__.py", "compress/exporters/torch/__init__.py",
                     "compress/runtimes/agent.py", "compress/runtimes/backends/litert.py",
                     "compress/runtimes/targets/ssh.py", "compress/data/corpus/kjv.txt"):
        assert expected in names, expected
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "onnx = compress.exporters.onnx:OnnxFormat" in entry_points
    assert "onnxruntime = compress.runtimes.backends.onnxruntime:OnnxRuntimeBackend" in entry_points


@pytest.mark.slow
def test_the_quickstart_runs_from_the_installed_wheel(site: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(ROOT / "recipes" / "quickstart.yaml", outside / "quickstart.yaml")
    where = subprocess.run([sys.executable, "-c", "import compress, compress.exporters.onnx;"
                            "import compress.runtimes.agent as a; print(compress.__file__); print(a.__file__)\n"
                            "try:\n    import exporters\nexcept ImportError:\n    print('no exporters')\n"
                            "try:\n    import runtimes\nexcept ImportError:\n    print('no runtimes')"],
                           capture_output=True, text=True, cwd=outside, env=_env(site), check=True)
    lines = where.stdout.split()
    assert Path(lines[0]).is_relative_to(site) and Path(lines[1]).is_relative_to(site)
    assert lines[2:] == ["no", "exporters", "no", "runtimes"]
    done = subprocess.run(
        [sys.executable, "-m", "compress.cli", "run", "quickstart.yaml", "--out", "runs",
         "--set", "model.train.epochs=3", "--set", "stages[1].distill.epochs=2",
         "--set", "verify.latency={warmup: 0, min_runs: 3, min_seconds: 0, trials: 1}", "--set", "gates=null"],
        capture_output=True, text=True, cwd=outside, env=_env(site), timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    results = outside / Path(done.stdout.strip().splitlines()[-1].removeprefix("results: "))
    text = results.read_text()
    assert '"status": "complete"' in text
    for name in ("distill.int8.onnx", "distill.int8.openvino", "distill.int8.tflite"):
        assert f'"artifact": "{name}"' in text


def test_the_layer_rules_hold_and_a_broken_one_is_caught(site: Path, tmp_path: Path) -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is installed with the dev extra"
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    kept = subprocess.run([lint, str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=copy)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "Contracts: 4 kept, 0 broken." in kept.stdout

    # a format that reaches into the core's pipeline, and a device side that reaches into the core
    inspect = copy / "compress" / "exporters" / "onnx" / "inspect.py"
    inspect.write_text(inspect.read_text() + "\nfrom compress import pipeline  # noqa\n")
    files = copy / "compress" / "runtimes" / "files.py"
    files.write_text(files.read_text() + "\nfrom compress import errors  # noqa\n")
    broken = subprocess.run([lint, str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=copy)
    assert broken.returncode == 1
    assert "Formats import only the core's contracts and errors BROKEN" in broken.stdout
    assert "The device side imports nothing of the core or the formats BROKEN" in broken.stdout
    assert "compress.exporters.onnx.inspect -> compress.pipeline" in broken.stdout
