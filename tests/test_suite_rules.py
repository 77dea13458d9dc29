"""The suite's own rules: a test CI requires (sshd, the device venv) fails instead of skipping there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = '''
import pytest


@pytest.mark.sshd
def test_needs_sshd():
    pytest.skip("OpenSSH server not installed")


def test_may_skip():
    pytest.skip("no CUDA GPU")


def test_uses_the_device_venv(device_python):
    pass
'''


def _pytest(folder: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COMPRESS_REQUIRE"}
    env.update(PYTHONPATH=str(ROOT), COLUMNS="400")  # tests.conftest importable; summary lines whole
    if require is not None:
        env["COMPRESS_REQUIRE"] = require
    # the device venv fixture is replaced by one that skips, as it does where the venv cannot be built
    (folder / "conftest.py").write_text("import pytest\n\n\n@pytest.fixture\ndef device_python():\n"
                                        "    pytest.skip('cannot build the device venv')\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-n", "0", "-p", "no:cacheprovider",
                           "-q", "-rfEs", "--rootdir", str(folder), "-c", os.devnull, str(folder / "test_probe.py")],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_a_required_skip_fails_and_other_skips_stay_skips(tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    relaxed = _pytest(tmp_path, None)
    assert relaxed.returncode == 0, relaxed.stdout[-2000:]
    assert "3 skipped" in relaxed.stdout

    strict = _pytest(tmp_path, "sshd,device_venv")
    assert strict.returncode == 1, strict.stdout[-2000:]
    assert "1 failed, 1 skipped, " in strict.stdout and ", 1 error in " in strict.stdout  # the venv's: at setup
    assert ("FAILED test_probe.py::test_needs_sshd - skipped where it must run (COMPRESS_REQUIRE requires sshd): "
            "Skipped: OpenSSH server not installed") in strict.stdout
    assert "ERROR test_probe.py::test_uses_the_device_venv - skipped where it must run (COMPRESS_REQUIRE requires " \
           "device_venv): Skipped: cannot build the device venv" in strict.stdout

    only_sshd = _pytest(tmp_path, "sshd")
    assert only_sshd.returncode == 1 and "1 failed, 2 skipped" in only_sshd.stdout, only_sshd.stdout[-2000:]


def test_the_cuda_constraints_are_the_cpu_ones_but_for_onnx_runtime():
    """constraints-cuda.txt (docs/targets.md, 'The GPU tests') keeps every other pin of constraints.txt."""

    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if line and not line.startswith("#"))

    cpu, cuda = pins("constraints.txt"), pins("constraints-cuda.txt")
    assert cuda["onnxruntime-gpu"] == cuda["onnxruntime"]  # the CPU package at the GPU one's release
    different = {name for name in cpu.keys() | cuda.keys() if cpu.get(name) != cuda.get(name)}
    assert different == {"onnxruntime", "onnxruntime-gpu"}
