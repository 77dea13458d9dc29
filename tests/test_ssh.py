"""The ssh:// target against a real OpenSSH server started here on 127.0.0.1 with generated keys.

The "device" is a separate virtual environment holding only numpy, onnxruntime and ai-edge-litert
(no torch, no compress, no openvino): what a board would have.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from compress.errors import InputError
from compress.runtimes.targets import TargetError
from compress.targets import resolve
from tests.conftest import eventually, measure, printed_run, small_recipe

SSHD = "/usr/sbin/sshd"
ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.sshd,
              pytest.mark.skipif(not os.path.exists(SSHD) or shutil.which("ssh") is None,
                                 reason="OpenSSH server not installed (apt-get install openssh-server)")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sshd")
    os.chmod(folder, 0o700)
    _keygen(folder / "host_key")
    _keygen(folder / "user_key")
    _keygen(folder / "other_host_key")
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_key'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PidFile {folder / 'sshd.pid'}
MaxStartups 50
MaxSessions 50
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = open(folder / "sshd.log", "w")  # noqa: SIM115 - open for the server's lifetime
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    other = (folder / "other_host_key.pub").read_text().split()
    (folder / "changed_known_hosts").write_text(f"[127.0.0.1]:{port} {other[0]} {other[1]}\n")
    (folder / "empty_known_hosts").write_text("")
    yield {"folder": folder, "port": port, "user": getpass.getuser(), "key": folder / "user_key",
           "known_hosts": folder / "known_hosts"}
    server.terminate()
    server.wait(timeout=10)
    log.close()


def _spec(sshd, python: Path | str, *, known_hosts: Path | None = None, **options: str) -> str:
    query = {"python": str(python), "identity": str(sshd["key"]),
             "known_hosts": str(known_hosts or sshd["known_hosts"]), **options}
    return f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}?" + "&".join(f"{k}={v}" for k, v in query.items())


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    from tests.conftest import digits_onnx

    # a hostile file name: it never reaches a shell
    return digits_onnx(tmp_path_factory.mktemp("ssh-models") / "digits; touch HOSTILE.onnx")


def _bench_request(model: Path, runtime: str = "onnxruntime") -> dict:
    return {"protocol": 1, "model": str(model), "runtime": runtime, "device": "cpu", "threads": 1,
            "random_inputs": {"shapes": {}, "batch": 1, "seed": 0},
            "latency": {"warmup": 1, "min_runs": 3, "min_seconds": 0.0, "batch_size": 1, "max_seconds": 30}}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("compress-agent.*"))


@pytest.mark.slow
def test_recipe_verifies_int8_tflite_and_onnx_on_the_device(cli, tmp_path, sshd, device_python):
    device_tmp = tmp_path / "device-tmp"
    device_tmp.mkdir()
    spec = _spec(sshd, device_python, tmpdir=str(device_tmp))
    recipe = small_recipe(export=["onnx", "tflite"])
    recipe["verify"] = {**recipe["verify"], "runtimes": ["onnxruntime", "litert"], "targets": ["local", spec]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = cli("run", path, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.stderr
    folder = printed_run(result.stdout)
    results = json.loads((folder / "results.json").read_text())
    name = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"  # options left out of the name
    remote = [m for m in results["measurements"] if m["target"] == name]
    local = {(m["artifact"], m["runtime"]): m for m in results["measurements"] if m["target"] == "local"}
    assert {(m["runtime"], "int8" in m["artifact"]) for m in remote} >= {("onnxruntime", True), ("litert", True)}
    assert len(remote) == len(local)
    for m in remote:
        assert m["status"] == "ok", m["error"]
        assert m["latency"]["runs"] >= 3 and m["latency"]["p50_ms"] > 0
        assert m["device"]["python_executable"] == str(device_python)  # measured by the device's Python
        assert "torch" not in m["device"]["runtimes"] and "openvino" not in m["device"]["runtimes"]
        twin = local[(m["artifact"], m["runtime"])]
        assert m["metric"]["top1"] == pytest.approx(twin["metric"]["top1"], abs=1e-9)  # same outputs there
        assert m["agreement"] == pytest.approx(twin["agreement"], abs=1e-9)
    assert name in (folder / "table.txt").read_text() and "identity" not in (folder / "table.txt").read_text()
    assert _leftovers(device_tmp) == []
    (tmp_path.parent / "ssh-quickstart-results.json").write_text(json.dumps(results["measurements"]))


def test_an_unknown_host_key_is_refused_with_its_fingerprint(sshd, device_python):
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(sshd["folder"] / "host_key.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    unknown = sshd["folder"] / "empty_known_hosts"
    with pytest.raises(TargetError) as refused:
        resolve(_spec(sshd, device_python, known_hosts=unknown)).prepare()
    message = str(refused.value)
    assert "not in" in message and fingerprint in message and "ED25519" in message
    assert f"ssh-keyscan -p {sshd['port']} 127.0.0.1 >> {unknown}" in message
    assert "\n" not in message
    with pytest.raises(TargetError, match="CHANGED") as changed:
        resolve(_spec(sshd, device_python, known_hosts=sshd["folder"] / "changed_known_hosts")).prepare()
    assert fingerprint in str(changed.value)


def test_the_cli_refuses_an_unknown_host_with_exit_2(cli, sshd, device_python, onnx_model):
    result = cli("bench", onnx_model, "--target", _spec(sshd, device_python,
                                                        known_hosts=sshd["folder"] / "empty_known_hosts"))
    assert result.exit_code == 2 and "SHA256:" in result.stderr and "ssh-keyscan" in result.stderr


@pytest.mark.slow
def test_bench_on_the_device_and_hostile_names_run_nothing(cli, tmp_path, sshd, device_python, onnx_model):
    marker = tmp_path / "x"
    ok = cli("bench", onnx_model, "--target", _spec(sshd, device_python), "--json", "--warmup", "1",
             "--min-runs", "3", "--min-seconds", "0")
    assert ok.exit_code == 0, ok.stderr
    row = json.loads(ok.stdout)[0]
    assert row["ok"] and row["device"]["python_executable"] == str(device_python)
    assert not (onnx_model.parent / "HOSTILE").exists() and not Path("HOSTILE").exists()
    # a command word on the device: quoted, so it is one (missing) program, not two commands
    hostile = _spec(sshd, f"{device_python}; touch {marker}")
    with pytest.raises(TargetError, match="was not found on the device"):
        resolve(hostile).prepare()
    assert measure(resolve(hostile), _bench_request(onnx_model), 30)["status"] == "failed"
    for spec in (f"ssh://{sshd['user']}@127.0.0.1;touch {marker}", f"ssh://root;touch {marker}@127.0.0.1",
                 f"ssh://127.0.0.1:{sshd['port']}?tmpdir=/tmp;touch {marker}", f"ssh://$(touch {marker})"):
        with pytest.raises(InputError):
            resolve(spec)
    assert not marker.exists()


def _wrapper(folder: Path, body: str, real: Path) -> Path:
    """A `python` for the device that runs the probe normally and does `body` for the agent."""
    script = folder / f"python-{uuid.uuid4().hex}"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {real} "$@"; fi\n{body}\n')
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_a_hanging_step_is_killed_at_its_timeout_and_leaves_nothing(tmp_path, sshd, device_python, onnx_model):
    marker = f"compress-hang-{uuid.uuid4().hex}"
    sleeper = f"{device_python} -c 'import time; time.sleep(600)' {marker}"
    python = _wrapper(tmp_path, f"{sleeper} &\nexec {sleeper}", device_python)
    device_tmp = tmp_path / "device-tmp"
    device_tmp.mkdir()
    target = resolve(_spec(sshd, python, tmpdir=str(device_tmp)))
    target.prepare()
    response = measure(target, _bench_request(onnx_model), 3)
    assert response["status"] == "timeout" and "within 3 s" in response["error"]  # not after the step's 600 s
    eventually(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0,
               "killing the remote process group")
    assert _leftovers(device_tmp) == []


def test_a_device_without_the_runtime_gets_a_message_naming_it(cli, sshd, device_python, onnx_model):
    result = cli("bench", onnx_model, "--runtime", "openvino", "--target", _spec(sshd, device_python),
                 "--warmup", "1", "--min-runs", "3", "--min-seconds", "0")
    assert result.exit_code == 3
    assert "openvino is not installed on this device" in result.stderr
    assert str(device_python) in result.stderr and "pip install openvino" in result.stderr


@pytest.mark.slow
def test_a_dropped_connection_is_incomplete_never_ok(tmp_path, sshd, device_python, onnx_model):
    # The device's python kills the sshd session process serving it: the connection drops mid-run.
    python = _wrapper(tmp_path, f'kill -9 $PPID\nexec {device_python} "$@"', device_python)
    device_tmp = tmp_path / "device-tmp"
    device_tmp.mkdir()
    target = resolve(_spec(sshd, python, tmpdir=str(device_tmp)))
    target.prepare()
    response = measure(target, _bench_request(onnx_model), 30)
    assert response["status"] == "incomplete" and not response["ok"]
    assert "dropped" in response["error"]
    time.sleep(1)
    assert _leftovers(device_tmp) == []
