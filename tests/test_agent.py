"""The device agent: its protocol, statistics, and the local target's process isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.modelio import save_torch_artifact
from compress.runtimes import agent
from compress.runtimes.targets.local import AGENT, LocalTarget
from tests.conftest import eventually, measure

HANG_MODULE = '''
import os, subprocess, time
import torch

class Hangs(torch.nn.Module):
    def __init__(self, pid_file):
        super().__init__()
        self.pid_file = pid_file
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        if not x.requires_grad and os.environ.get("HANG_NOW") == "1":
            child = subprocess.Popen(["sleep", "300"])
            with open(self.pid_file, "w") as handle:
                handle.write(f"{os.getpid()} {child.pid}")
            time.sleep(300)
        return self.linear(x)

class Crashes(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        if os.environ.get("CRASH_NOW") == "1":
            os._exit(11)
        return self.linear(x)
'''


def _torch_artifact(tmp_path: Path, factory: str, kwargs: dict) -> Path:
    from compress.modelio import build_from_factory

    model = build_from_factory(factory, kwargs, tmp_path, file=None, field="factory")
    return save_torch_artifact(model, tmp_path / "artifact", factory=factory, kwargs=kwargs,
                               source_folder=tmp_path, example=torch.zeros(1, 4))


@pytest.fixture
def linear_onnx(tmp_path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    path = tmp_path / "linear.onnx"
    torch.onnx.export(model, (torch.zeros(2, 4),), str(path), dynamo=True, input_names=["x"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    return path


def _inputs(tmp_path: Path, count: int = 10) -> Path:
    path = tmp_path / "inputs.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((count, 4)).astype(np.float32))
    return path


def test_percentile_matches_numpy():
    values = sorted(np.random.default_rng(1).random(101).tolist())
    for q in (0, 50, 90, 99, 100):
        assert agent.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_time_runs_honours_min_runs_and_min_seconds():
    times, elapsed = agent.time_runs(lambda: None, warmup=2, min_runs=7, min_seconds=0.0, max_seconds=10)
    assert len(times) == 7
    times, elapsed = agent.time_runs(lambda: time.sleep(0.001), warmup=0, min_runs=1, min_seconds=0.05,
                                     max_seconds=10)
    assert elapsed >= 0.05 and len(times) >= 2


@pytest.mark.slow
def test_agent_script_round_trip(tmp_path, linear_onnx):
    request = {"protocol": 1, "model": str(linear_onnx), "runtime": "onnxruntime", "threads": 1,
               "inputs": str(_inputs(tmp_path)), "batch_size": 4, "outputs": str(tmp_path / "out.npz"),
               "latency": {"warmup": 1, "min_runs": 5, "min_seconds": 0.0, "batch_size": 1}}
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(request))
    # Only numpy and the runtime: run it as a script from an unrelated folder, as on a device.
    done = subprocess.run([sys.executable, str(AGENT), str(request_file)], capture_output=True, text=True,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout.strip().splitlines()[-1])
    assert response["ok"] and response["protocol"] == 1
    assert response["runtime"]["name"] == "onnxruntime"
    assert response["latency"]["runs"] >= 5 and response["latency"]["threads"] == 1
    assert response["device"]["machine"]
    with np.load(tmp_path / "out.npz") as archive:
        assert archive["output_0"].shape == (10, 3)


def test_agent_reports_a_bad_request_and_a_bad_model(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = subprocess.run([sys.executable, str(AGENT), str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "bad request" in done.stdout
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    response = measure(LocalTarget(), {"model": str(tmp_path / "model.onnx"),
                                      "runtime": "onnxruntime", "inputs": str(_inputs(tmp_path))}, timeout_s=60)
    assert not response["ok"] and response["status"] == "failed"
    assert "\n" not in response["error"]


@pytest.mark.slow
def test_unknown_runtime_is_a_clear_error(tmp_path, linear_onnx):
    response = measure(LocalTarget(), {"model": str(linear_onnx), "runtime": "tvm",
                                      "inputs": str(_inputs(tmp_path))}, timeout_s=60)
    assert not response["ok"]
    assert "runtime 'tvm' is not known" in response["error"]


def test_threads_are_set_before_the_runtime_loads(tmp_path, linear_onnx):
    # The agent exports OMP_NUM_THREADS before the backend (and its runtime) loads: seen from the
    # backend's loading, in an agent loaded as a file the way a device runs it.
    probe = tmp_path / "probe.py"
    probe.write_text(f"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("agent_probe", {str(AGENT)!r})
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)
seen = []
def load_backend(runtime, model, threads, device):
    seen.extend([os.environ["OMP_NUM_THREADS"], "onnxruntime" in sys.modules])
    raise SystemExit(0)
agent.load_backend = load_backend
try:
    agent.serve(agent.Request(model={str(linear_onnx)!r}, runtime="onnxruntime", threads=3))
except SystemExit:
    pass
print(*seen)
""")
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["3", "False"]


@pytest.mark.slow
def test_a_hanging_measurement_is_killed_with_its_children(tmp_path):
    (tmp_path / "hangmodels.py").write_text(HANG_MODULE)
    pid_file = tmp_path / "pids.txt"
    artifact = _torch_artifact(tmp_path, "hangmodels:Hangs", {"pid_file": str(pid_file)})
    os.environ["HANG_NOW"] = "1"
    try:
        response = measure(LocalTarget(), {"model": str(artifact), "runtime": "torch",
                                          "inputs": str(_inputs(tmp_path)), "outputs": str(tmp_path / "o.npz")},
                           timeout_s=8)
    finally:
        del os.environ["HANG_NOW"]
    assert response["status"] == "timeout" and not response["ok"]  # at its 8 s: the model hangs for good
    agent_pid, child_pid = (int(p) for p in pid_file.read_text().split())
    for pid in (agent_pid, child_pid):
        eventually(lambda pid=pid: not _alive(pid), f"ending process {pid} at the timeout")


def test_a_crashing_runtime_ends_only_its_measurement(tmp_path):
    (tmp_path / "hangmodels.py").write_text(HANG_MODULE)
    artifact = _torch_artifact(tmp_path, "hangmodels:Crashes", {})
    os.environ["CRASH_NOW"] = "1"
    try:
        response = measure(LocalTarget(), {"model": str(artifact), "runtime": "torch",
                                          "inputs": str(_inputs(tmp_path)), "outputs": str(tmp_path / "o.npz")},
                           timeout_s=60)
    finally:
        del os.environ["CRASH_NOW"]
    assert response["status"] == "failed"
    assert "exit code 11" in response["error"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text().lower()


def test_latency_in_rounds_reports_each_rounds_p50(tmp_path, linear_onnx):
    response = measure(LocalTarget(), {"model": str(linear_onnx), "runtime": "onnxruntime",
                                      "inputs": str(_inputs(tmp_path)),
                                      "latency": {"warmup": 1, "min_runs": 4, "min_seconds": 0, "trials": 3}},
                                     timeout_s=60)
    lat = response["latency"]
    assert len(lat["trial_p50_ms"]) == 3 and lat["runs"] == 12
    assert all(lat["min_ms"] <= p <= lat["max_ms"] for p in lat["trial_p50_ms"])


def test_a_gpu_nobody_can_name_says_why_for_both_ways_of_asking(monkeypatch):
    """No nvidia-smi and no CUDA torch: the description keeps both causes, not only the last."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the failing path cannot be reached")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi to find
    info = agent.describe_gpu(agent.Device("cuda:0"))
    assert "name" not in info
    assert info["error"].startswith("nvidia-smi: FileNotFoundError") and "; torch: " in info["error"], info
