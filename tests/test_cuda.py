"""The cuda target: a missing GPU or provider is a clear error, never a quiet run on the CPU.
The GPU tests run where a CUDA GPU (and a CUDA build of torch / onnxruntime-gpu) is present."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from compress.runtimes.targets import TargetError
from compress.targets import resolve
from tests.conftest import measure


def _gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines()) if done.returncode == 0 else 0


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _ort_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


HAS_GPU = _gpu_count() > 0
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA GPU")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    from tests.conftest import digits_onnx

    return digits_onnx(tmp_path_factory.mktemp("cuda-models") / "digits.onnx")


def _request(model: Path, runtime: str) -> dict:
    return {"protocol": 1, "model": str(model), "runtime": runtime, "device": "cpu", "threads": 1,
            "random_inputs": {"shapes": {}, "batch": 1, "seed": 0},
            "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "batch_size": 1, "max_seconds": 30}}


def test_each_runtime_is_asked_for_the_gpu_by_name():
    target = resolve("cuda:1")
    assert target.device_for("onnxruntime") == "cuda:1" and target.device_for("torch") == "cuda:1"
    assert resolve("cuda:0?provider=tensorrt").device_for("onnxruntime") == "tensorrt:0"
    with pytest.raises(ValueError, match="openvino has no CUDA backend"):
        target.device_for("openvino")
    with pytest.raises(ValueError, match="litert has no CUDA backend"):
        target.device_for("litert")
    refused = measure(target, _request(Path("m.tflite"), "litert"), 10)
    assert refused["status"] == "failed" and "litert has no CUDA backend" in refused["error"]


@pytest.mark.skipif(HAS_GPU, reason="this machine has a CUDA GPU")
def test_no_gpu_is_a_clear_error(cli, onnx_file):
    with pytest.raises(TargetError, match=r"target cuda:0: no CUDA GPU here \(nvidia-smi"):
        resolve("cuda").prepare()
    result = cli("bench", onnx_file, "--target", "cuda:0")
    assert result.exit_code == 2 and "no CUDA GPU here" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(HAS_GPU and _ort_cuda(), reason="onnxruntime here has CUDA")
def test_onnxruntime_without_its_cuda_provider_never_falls_back_to_the_cpu(onnx_file):
    # The agent is asked directly (prepare() would stop earlier on a machine without a GPU).
    response = measure(resolve("cuda:0"), _request(onnx_file, "onnxruntime"), 60)
    assert response["status"] == "failed" and response["latency"] is None
    assert "no CUDAExecutionProvider" in response["error"] and "install onnxruntime-gpu" in response["error"]
    assert "CPUExecutionProvider" in response["error"]  # what it has, said


@pytest.mark.skipif(HAS_GPU and _torch_cuda(), reason="torch here has CUDA")
def test_torch_without_cuda_is_refused(tmp_path):
    import torch

    from compress.zoo.digits import DigitsCNN

    program = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(DigitsCNN(width=8).eval(), (torch.rand(1, 1, 8, 8),)), str(program))
    response = measure(resolve("cuda:0"), _request(program, "torch"), 60)
    assert response["status"] == "failed" and "has no CUDA device" in response["error"]


def _smi_gpu(index: int) -> dict:
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"]
    line = subprocess.run([*query, "-i", str(index)], capture_output=True, text=True, check=True).stdout.strip()
    name, driver, memory = (part.strip() for part in line.split(","))
    return {"index": index, "name": name, "driver": driver, "memory_mb": int(float(memory))}


@needs_gpu
def test_cuda_target_prepares_and_names_the_gpus():
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout.splitlines()
    target = resolve("cuda:0")
    assert target.gpus() == [line for line in listed if line.startswith("GPU ")] != []
    target.prepare()  # GPU 0 is there: no error
    count = _gpu_count()
    with pytest.raises(TargetError) as caught:
        resolve(f"cuda:{count}").prepare()
    assert str(caught.value) == (f"target cuda:{count}: this machine has {count} CUDA GPU(s): "
                                 + ", ".join(f"cuda:{i}" for i in range(count)))


@needs_gpu
def test_the_agent_records_the_gpu_it_ran_on():
    from compress.runtimes.agent import describe_device

    device = describe_device("cuda:0")
    assert device["gpu"] == _smi_gpu(0)  # name, driver and memory as nvidia-smi reports them


@needs_gpu
@pytest.mark.skipif(not HAS_GPU or not _ort_cuda(), reason="no CUDA GPU with onnxruntime-gpu")
def test_onnx_on_the_gpu(cli, onnx_file):
    result = cli("bench", onnx_file, "--target", "cuda:0", "--json", "--warmup", "1", "--min-runs", "3",
                 "--min-seconds", "0")
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)[0]
    assert row["runtime"]["device"] == "cuda:0" and row["device"]["gpu"] == _smi_gpu(0)


@needs_gpu
@pytest.mark.skipif(not HAS_GPU or not _torch_cuda(), reason="no CUDA GPU with a CUDA build of torch")
def test_torch_on_the_gpu(tmp_path):
    import torch

    from compress.zoo.digits import DigitsCNN

    program = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(DigitsCNN(width=8).eval(), (torch.rand(1, 1, 8, 8),)), str(program))
    response = measure(resolve("cuda:0"), _request(program, "torch"), 120)
    assert response["ok"], response
    assert response["runtime"]["device"] == "cuda:0" and response["device"]["gpu"] == _smi_gpu(0)
