"""The adb:// target against a fake `adb`: it records its argument lists, prints canned `adb devices`
output, and plays the device on this machine (push/pull copy files, `shell` runs `sh -c` in a new
session, as adbd does). What this cannot show without a phone is said in docs/targets.md."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from compress.errors import InputError
from compress.runtimes.targets import TargetError
from compress.runtimes.targets.adb import parse_benchmark, parse_devices
from compress.targets import resolve
from tests.conftest import eventually, measure

FAKE_ADB = f"""#!{sys.executable}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "devices":
    sys.stdout.write(os.environ["FAKE_ADB_DEVICES"])
elif args[0] == "push":
    (shutil.copytree if os.path.isdir(args[1]) else shutil.copy)(args[1], args[2])
elif args[0] == "pull":
    if not os.path.exists(args[1]):
        sys.exit("adb: error: failed to stat remote object '" + args[1] + "': No such file or directory")
    shutil.copy(args[1], args[2])
elif args[0] == "shell":
    sys.exit(subprocess.call(["sh", "-c", " ".join(args[1:])], start_new_session=True))
"""
ONE = "List of devices attached\nemulator-5554          device product:sdk model:Pixel_7 transport_id:1\n\n"
BENCH_OUTPUT = """INFO: Log parameter values verbosely: [0]
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=3400 first=1210 curr=140 min=120 max=1210 avg=146.9 std=40
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=7000 first=141 curr=139 min=118 max=420 avg=142.5 std=12 p5=125 median=140 p95=160
INFO: Inference timings in us: Init: 3339, First inference: 1210, Warmup (avg): 146.9, Inference (avg): 142.5
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB)
    adb.chmod(0o755)
    device = tmp_path / "device"  # the "device's" /data/local/tmp
    device.mkdir()
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", ONE)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    class Fake:
        def calls(self) -> list[list[str]]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        def shells(self) -> list[str]:
            return [c[c.index("shell") + 1] for c in self.calls() if "shell" in c]

    fake = Fake()
    fake.device, fake.bin, fake.tmp = device, bin_dir, tmp_path
    return fake


def _bench_program(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "benchmark_model"
    program.write_text(f"#!/bin/sh\n{body}\n")
    program.chmod(0o755)
    return program


def _request(model: Path, runtime: str = "litert", **extra) -> dict:
    return {"protocol": 1, "model": str(model), "runtime": runtime, "device": "cpu", "threads": 2,
            "random_inputs": {"shapes": {}, "batch": 1, "seed": 0},
            "latency": {"warmup": 3, "min_runs": 20, "min_seconds": 0.5, "batch_size": 1, "max_seconds": 30},
            **extra}


def test_devices_output_is_parsed():
    text = ("* daemon started successfully\nList of devices attached\nemulator-5554\tdevice product:sdk "
            "transport_id:1\nR58M\tunauthorized usb:1-1 transport_id:2\n0123\toffline\n"
            "9999\tno permissions (missing udev rules? user is in the plugdev group); see [http://x]\n")
    assert parse_devices(text) == [("emulator-5554", "device"), ("R58M", "unauthorized"), ("0123", "offline"),
                                   ("9999", "no permissions")]


def test_benchmark_model_summary_becomes_a_latency_record():
    stats = dataclasses.asdict(parse_benchmark(BENCH_OUTPUT, threads=2, warmup=3))
    assert stats["runs"] == 7000 and stats["p50_ms"] == pytest.approx(0.140) and stats["mean_ms"] == 0.1425
    assert stats["min_ms"] == 0.118 and stats["max_ms"] == 0.420 and stats["p99_ms"] == pytest.approx(0.160)
    old = BENCH_OUTPUT.replace(" p5=125 median=140 p95=160", "")  # older builds: no percentiles printed
    assert parse_benchmark(old, 1, 1).p50_ms == pytest.approx(0.1425)
    with pytest.raises(ValueError, match="Inference timings"):
        parse_benchmark("ERROR: Failed to load model", 1, 1)


@pytest.mark.parametrize(("spec", "devices", "message"), [
    ("adb://R58M", "List of devices attached\nR58M\tunauthorized usb:1-1\n", "has not authorized this computer"),
    ("adb://0123", "List of devices attached\n0123\toffline\n", "is offline"),
    ("adb://nope", ONE, "no device with serial nope is attached (adb devices: emulator-5554 (device))"),
    ("adb://", ONE + "0123\tdevice\n", "several devices are attached"),
    ("adb://", "List of devices attached\n\n", "no device is attached"),
    ("adb://9999", "List of devices attached\n9999\tno permissions (udev); see [http://x]\n", "no permissions"),
])
def test_a_device_that_is_not_ready_is_a_clear_error(fake, monkeypatch, spec, devices, message):
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    with pytest.raises(TargetError) as error:
        resolve(f"{spec}?benchmark_model=/data/local/tmp/benchmark_model").prepare()
    assert message in str(error.value) and "\n" not in str(error.value)
    assert fake.calls() == [["devices", "-l"]]  # nothing else was run


def test_adb_missing_is_a_clear_error(fake, monkeypatch):
    monkeypatch.setenv("PATH", str(fake.tmp / "empty"))
    with pytest.raises(TargetError, match="adb is not installed here"):
        resolve("adb://emulator-5554?benchmark_model=/data/local/tmp/benchmark_model").prepare()


def test_benchmark_model_on_the_device_with_every_word_quoted(fake, tflite_model):
    marker = fake.tmp / "x"
    # a path on the device with a shell command in it: quoted, it is only a (strange) folder name
    program = _bench_program(fake.tmp / f"tools; touch {marker}", f"echo \"$@\" > {fake.tmp}/args\ncat <<'EOF'\n"
                             f"{BENCH_OUTPUT}EOF")
    target = resolve(f"adb://emulator-5554?benchmark_model={program}&tmpdir={fake.device}")
    target.prepare()
    response = measure(target, _request(tflite_model), 30)
    assert response["ok"], response
    assert response["latency"]["p50_ms"] == pytest.approx(0.140) and response["latency"]["threads"] == 2
    assert response["outputs"] is None and response["runtime"]["name"] == "litert"
    assert not marker.exists()
    for call in fake.calls()[1:]:
        assert call[:2] == ["-s", "emulator-5554"]  # always the named device
    shells = fake.shells()
    assert shells[0] == f"test -x '{program}'; echo compress-exit:$?"
    run = next(s for s in shells if "--graph=" in s)
    assert f"'{program}'" in run and "--num_threads=2" in run and "--warmup_runs=3" in run
    args = (fake.tmp / "args").read_text()
    assert "--num_runs=20" in args and "--min_secs=0.5" in args and "/model.tflite" in args
    pushes = [c for c in fake.calls() if "push" in c]
    assert pushes[0][3] == str(tflite_model) and pushes[0][4].endswith("/model.tflite")
    assert list(fake.device.iterdir()) == []  # the private folder is gone


def test_benchmark_model_runs_tflite_only(fake, tmp_path):
    target = resolve(f"adb://emulator-5554?benchmark_model=/data/local/tmp/benchmark_model&tmpdir={fake.device}")
    response = measure(target, _request(tmp_path / "m.onnx", runtime="onnxruntime"), 30)
    assert response["status"] == "failed" and "runs .tflite models" in response["error"]


def test_hostile_serials_run_nothing(fake, tmp_path):
    marker = tmp_path / "x"
    for spec in (f"adb://;touch {marker}?python=/x", f"adb://$(touch {marker})?python=/x",
                 "adb://a b?python=/x", f"adb://emu`touch {marker}`?python=/x"):
        with pytest.raises(InputError, match="is not a device serial"):
            resolve(spec)
    assert not marker.exists() and fake.calls() == []


def test_a_hanging_benchmark_is_killed_and_leaves_nothing(fake):
    marker = f"compress-adb-hang-{uuid.uuid4().hex}"
    sleeper = f"{sys.executable} -c 'import time; time.sleep(600)' {marker}"
    program = _bench_program(fake.tmp / "tools", f"{sleeper} &\n{sleeper}")
    target = resolve(f"adb://emulator-5554?benchmark_model={program}&tmpdir={fake.device}")
    target.prepare()
    (fake.tmp / "m.tflite").write_bytes(b"x")
    response = measure(target, _request(fake.tmp / "m.tflite"), 2)
    assert response["status"] == "timeout"  # at its 2 s, not after the benchmark's 600 s
    eventually(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0,
               "killing the process group on the device")
    assert list(fake.device.iterdir()) == []


@pytest.mark.slow
def test_the_agent_where_the_device_has_python(fake, tmp_path, onnx_file):
    target = resolve(f"adb://emulator-5554?python={sys.executable}&tmpdir={fake.device}")
    inputs = tmp_path / "inputs.npz"
    import numpy as np

    np.savez(inputs, input=np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
    request = {**_request(onnx_file, runtime="onnxruntime"), "inputs": str(inputs), "outputs": str(tmp_path / "o.npz")}
    request.pop("random_inputs")
    response = measure(target, request, 60)
    assert response["ok"], response
    assert response["latency"]["runs"] >= 20 and response["outputs"] == str(tmp_path / "o.npz")
    import onnxruntime

    with np.load(inputs) as given, np.load(tmp_path / "o.npz") as outputs:
        # the very outputs ONNX Runtime gives for those inputs in this process: the device ran the model
        expected = onnxruntime.InferenceSession(str(onnx_file)).run(None, {"input": given["input"]})[0]
        np.testing.assert_allclose(outputs["output_0"], expected, rtol=1e-5, atol=1e-6)
        assert np.ptp(expected, axis=0).max() > 0  # inputs that give different outputs
    run = next(s for s in fake.shells() if "agent.py" in s)
    assert run.startswith("cd '") or run.startswith("cd /")
    assert f"{sys.executable} agent.py request.json" in run
    assert list(fake.device.iterdir()) == []


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    from tests.conftest import digits_onnx

    return digits_onnx(tmp_path_factory.mktemp("adb-models") / "digits.onnx")


@pytest.fixture
def tflite_model(tmp_path) -> Path:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3 (the fake benchmark_model does not read it)")
    return path
