"""The device side stands alone: the runtimes/ folder, copied anywhere, runs the agent with numpy and
one runtime, in a Python where compress cannot be imported."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

import compress.runtimes
from tests.conftest import digits_onnx, load_backend

RUNTIMES = Path(compress.runtimes.__file__).resolve().parent


def test_the_copied_folder_runs_the_agent_without_compress(tmp_path: Path, device_python: Path) -> None:
    device = tmp_path / "board" / "runtimes"
    shutil.copytree(RUNTIMES, device, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    missing = subprocess.run([str(device_python), "-c", "import compress"], capture_output=True, text=True, cwd=work)
    assert missing.returncode == 1 and "No module named 'compress'" in missing.stderr

    model = digits_onnx(tmp_path / "digits.onnx")
    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "inputs.npz", input=x)
    request = {"protocol": 1, "model": str(model), "runtime": "onnxruntime", "threads": 1,
               "inputs": str(tmp_path / "inputs.npz"), "outputs": str(tmp_path / "outputs.npz"), "batch_size": 4,
               "latency": {"warmup": 1, "min_runs": 5, "min_seconds": 0.0}, "response": str(tmp_path / "response.json")}
    (tmp_path / "request.json").write_text(json.dumps(request))
    done = subprocess.run([str(device_python), str(device / "agent.py"), str(tmp_path / "request.json")],
                          capture_output=True, text=True, cwd=work, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    response = json.loads((tmp_path / "response.json").read_text())
    assert response["ok"] and response["status"] == "ok" and response["runtime"]["name"] == "onnxruntime"
    assert response["latency"]["runs"] >= 5
    assert response["device"]["python_executable"] == str(device_python)
    assert set(response["device"]["runtimes"]) == {"onnxruntime", "litert"}  # what that Python has, found by file
    with np.load(tmp_path / "outputs.npz") as outputs:
        got = outputs["output_0"]
    want = load_backend("onnxruntime", model).run({"input": x})[0]  # the same backend code, in this process
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    # a runtime that Python lacks is named, with how to install it
    (tmp_path / "request.json").write_text(json.dumps({**request, "runtime": "openvino"}))
    done = subprocess.run([str(device_python), str(device / "agent.py"), str(tmp_path / "request.json")],
                          capture_output=True, text=True, cwd=work, timeout=120)
    response = json.loads((tmp_path / "response.json").read_text())
    assert done.returncode == 1 and response["status"] == "failed"
    assert response["error"].startswith("openvino is not installed on this device") and "pip install openvino" in \
        response["error"]


def test_nothing_in_the_device_side_imports_compress() -> None:
    # the import-linter contract in pyproject.toml checks imports; this checks the words, so that no
    # lazy import inside a function slips past either
    for path in RUNTIMES.rglob("*.py"):
        text = path.read_text()
        assert "from compress" not in text and "import compress" not in text, path
