"""Target specs: parsed without connecting, one-line errors, names shown without options or secrets;
several targets measured in parallel across hosts with a deterministic result order."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

from compress.errors import InputError
from compress.targets import display, resolve, resolve_all, slug
from tests.conftest import small_recipe


@pytest.mark.parametrize(("spec", "name", "host"), [
    ("local", "local", "localhost"),
    ("cuda", "cuda:0", "localhost"),
    ("cuda:1", "cuda:1", "localhost"),
    ("cuda:0?provider=tensorrt", "cuda:0/tensorrt", "localhost"),
    ("ssh://pi@board", "ssh://pi@board", "ssh:board:22"),
    ("ssh://pi@board.local:2222?python=/opt/venv/bin/python&connect_timeout=5", "ssh://pi@board.local:2222",
     "ssh:board.local:2222"),
    ("ssh://10.0.0.7", "ssh://10.0.0.7", "ssh:10.0.0.7:22"),
    ("ssh://me@127.0.0.1:2222", "ssh://me@127.0.0.1:2222", "localhost"),  # this machine: not in parallel
    ("ssh://localhost", "ssh://localhost", "localhost"),
    ("ssh://me@[fe80::1]:22", "ssh://me@[fe80::1]", "ssh:[fe80::1]:22"),
    ("adb://emulator-5554?benchmark_model=/data/local/tmp/benchmark_model", "adb://emulator-5554",
     "adb:emulator-5554"),
    ("adb://192.168.1.5:5555?python=/data/local/tmp/python3", "adb://192.168.1.5:5555", "adb:192.168.1.5:5555"),
])
def test_specs_parse_without_connecting(spec, name, host):
    target = resolve(spec)  # an unreachable board is fine: nothing connects here
    assert (target.name, target.host) == (name, host)


@pytest.mark.parametrize(("spec", "message"), [
    ("jetson", "no target plugin named 'jetson' is installed"),
    ("cuda:x", "expected cuda or cuda:N"),
    ("cuda:0?provider=rocm", "provider='rocm' is not cuda or tensorrt"),
    ("ssh://pi@board;touch /tmp/x", "is not a host name or IP address"),
    ("ssh://pi;id@board", "is not a user name"),
    ("ssh://-oProxyCommand=x", "is not a host name"),
    ("ssh://pi@board:0", "port"),
    ("ssh://pi:secret@board", "passwords are not accepted"),
    ("ssh://pi@board?colour=red", "unknown option 'colour'"),
    ("ssh://pi@board?identity=/no/such/key", "option identity: /no/such/key is not a file"),
    ("ssh://pi@board?python=-c", "is not a path"),
    ("ssh://pi@board?tmpdir=relative", "must be an absolute path"),
    ("ssh://pi@board?connect_timeout=0", "more than 0"),
    ("ssh://pi@board/path", "expected ssh://"),
    ("adb://emu;reboot?python=/x", "is not a device serial"),
    ("adb://emulator-5554", "give one of ?benchmark_model="),
    ("adb://emulator-5554?python=/x&benchmark_model=/y", "give one of"),
    ("local?x=1", "takes no options"),
    (" local", "is not a target spec"),
    ("://x", "does not start with a target name"),
])
def test_bad_specs_are_one_line_errors_naming_the_field(spec, message):
    with pytest.raises(InputError) as error:
        resolve(spec, file="recipe.yaml", field="verify.targets[0]")
    text = str(error.value)
    assert text.startswith("recipe.yaml: verify.targets[0]: ") and message in text and "\n" not in text
    assert "secret" not in text


def test_names_hide_options_and_passwords():
    assert display("ssh://pi:hunter2@board:22?identity=/k") == "ssh://pi:***@board:22"
    assert slug("ssh://pi@board:2222") == "ssh-pi-board-2222"
    with pytest.raises(InputError, match="listed twice"):
        resolve_all(["ssh://pi@board?python=/a", "ssh://pi@board?python=/b"])


def test_recipe_validation_checks_every_target(cli, write_recipe):
    ok = small_recipe(verify={**small_recipe()["verify"],
                              "targets": ["local", "cuda:1", "ssh://pi@board.invalid:2222",
                                          "adb://emulator-5554?benchmark_model=/data/local/tmp/benchmark_model"]})
    assert cli("validate", write_recipe(ok)).exit_code == 0
    bad = small_recipe(verify={**small_recipe()["verify"], "targets": ["local", "ssh://pi@a b"]})
    result = cli("validate", write_recipe(bad))
    assert result.exit_code == 2 and "verify.targets[1]" in result.stderr and "'a b'" in result.stderr


class _Recorder:
    """A target that records when it ran; measurements of one host must never overlap, and the first
    measurement on each host waits at a barrier that only all hosts at once can pass."""

    active: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def __init__(self, name: str, host: str, log: list, barrier: threading.Barrier) -> None:
        self.name, self.host, self.log, self.barrier = name, host, log, barrier

    def prepare(self) -> None:
        self.log.append(("prepare", self.name))

    def measure(self, request: Any, timeout_s: float) -> Any:
        from compress.runtimes.protocol import Response

        with self.lock:
            self.active[self.host] = self.active.get(self.host, 0) + 1
            assert self.active[self.host] == 1, f"two measurements at once on {self.host}"
            self.log.append(("start", self.name, threading.current_thread().name))
            first = sum(1 for entry in self.log if entry[0] == "start" and entry[1] == self.name) == 1
        if first and self.name != "cuda:0":  # cuda:0 shares localhost with local: it comes after it
            self.barrier.wait(timeout=30)  # three hosts measured at the same time, or a BrokenBarrierError
        with self.lock:
            self.active[self.host] -= 1
        return Response.failure("failed", f"recorded on {self.name}")


def test_verify_measures_hosts_in_parallel_and_keeps_the_order(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    from rich.console import Console

    from compress import verify as verify_module
    from compress.artifact import Artifact

    log: list = []
    barrier = threading.Barrier(3)
    targets = [_Recorder("local", "localhost", log, barrier), _Recorder("cuda:0", "localhost", log, barrier),
               _Recorder("ssh://a", "ssh:a:22", log, barrier), _Recorder("ssh://b", "ssh:b:22", log, barrier)]
    verifier = verify_module.Verifier.__new__(verify_module.Verifier)
    verifier.targets = targets
    verifier.plan = SimpleNamespace(runtimes_for=lambda fmt: ["onnxruntime"], file="recipe.yaml",
                                    recipe=SimpleNamespace(model=SimpleNamespace(input=SimpleNamespace(name="input"))))
    verifier.folder = tmp_path
    verifier.torch_models = {}
    verifier._parent_outputs = {}
    verifier.data = SimpleNamespace(test=SimpleNamespace(inputs={"input": np.zeros((2, 1))}))
    verifier.console = Console(quiet=True)
    verifier.config = SimpleNamespace(latency=SimpleNamespace(threads=[1]))

    def fake_measure(artifact, runtime, target, inputs):
        target.measure(None, 1.0)
        return [(artifact.name, runtime, target.name)]

    verifier._measure = fake_measure
    artifacts = [Artifact(id=f"id{i}", name=f"a{i}", format="onnx", precision="fp32", path=tmp_path / f"a{i}.onnx",
                          sha256="0", lineage=(), parent=None, info={}) for i in range(3)]
    measured = verifier.verify(artifacts)
    assert measured == [(a.name, "onnxruntime", t.name) for a in artifacts for t in targets]
    assert [entry for entry in log if entry[0] == "prepare"] == [("prepare", t.name) for t in targets]
    threads = {entry[1]: entry[2] for entry in log if entry[0] == "start"}
    assert threads["local"] == threads["cuda:0"]  # one host: one thread, one after the other
    assert len({threads["local"], threads["ssh://a"], threads["ssh://b"]}) == 3
