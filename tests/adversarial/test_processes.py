"""Signals, locks, limits and a tampered cache: the run ends with its documented exit code, leaves no
process, no temporary folder and nothing half-written, and says why in one line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.adversarial.conftest import Sandbox, leftovers, no_process_left, recipe

SLOW_MEASUREMENT = {"runtimes": ["onnxruntime"], "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 60}}


def _start(box: Sandbox, data: dict, *extra: str) -> subprocess.Popen:
    path = box.write("recipe.yaml", data)
    return subprocess.Popen([sys.executable, "-m", "compress.cli", "run", str(path), "--out", str(box.out), *extra],
                            cwd=box.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(box.tmp), "COLUMNS": "200"})


def _wait_for(process: subprocess.Popen, words: str, out: Path, timeout: float = 180) -> None:
    """Read the working run's run.log until a line says `words` (the step it is in: the terminal's
    progress line is not kept, run.log records each step as it starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in out.glob("*/.*.partial/run.log"):
            if words in log.read_text(errors="replace"):
                return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {words!r}: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"never reached {words!r}")


def _run_logs(out: Path) -> str:
    """The end of every run.log under `out`: where a native crash leaves its Python stack."""
    return "".join(f"\n--- {log}\n{log.read_text(errors='replace')[-6000:]}" for log in out.rglob("run.log"))


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("during", ["export", "verify"])
def test_a_signal_ends_the_run_cleanly(box: Sandbox, sig: int, code: int, during: str) -> None:
    process = _start(box, recipe(verify=SLOW_MEASUREMENT, export=["onnx", "tflite"]))
    _wait_for(process, "export original.tflite" if during == "export" else "verify original.onnx", box.out)
    if during == "verify":
        time.sleep(2)  # the agent is measuring (its run takes 60 s)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr + _run_logs(box.out)
    assert "Traceback" not in stderr
    said = "SIGINT" if code == 130 else "signal 15"
    assert stderr.strip().splitlines()[-1].startswith(f"error: interrupted ({said})")
    no_process_left(box.root)  # the agent and its children too
    left = leftovers(box.tmp)
    assert not left, left  # no compress-agent-*, no converter scratch folder
    runs = [p for p in (box.out / "hostile").iterdir() if p.name not in ("cache", ".lock")]
    assert len(runs) == 1 and runs[0].name.endswith(".failed"), runs  # no .partial, no finished-looking folder
    assert (runs[0] / "run.log").is_file() and not (runs[0] / "artifacts").exists()
    cache = box.out / "hostile" / "cache"
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "a half-written cache entry"


@pytest.mark.slow
def test_one_run_at_a_time_per_output_folder_and_a_dead_holder_holds_nothing(box: Sandbox) -> None:
    first = _start(box, recipe(verify=SLOW_MEASUREMENT))
    _wait_for(first, "verify original", box.out)
    second = subprocess.run([sys.executable, "-m", "compress.cli", "run", str(box.root / "recipe.yaml"), "--out",
                             str(box.out)], capture_output=True, text=True, timeout=120, cwd=box.root,
                            env={**os.environ, "TMPDIR": str(box.tmp)})
    assert second.returncode == 2
    assert second.stderr == (f"error: --out: another compress run (pid {first.pid}) is using "
                             f"{box.out / 'hostile'}; wait for it to finish or give another --out\n")
    first.kill()  # dies holding the lock: the kernel releases it
    first.communicate(timeout=60)
    time.sleep(0.5)
    for entry in Path("/proc").iterdir():  # its agent, orphaned by the kill -9, is not ours to wait for
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and str(box.tmp) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(entry.name), signal.SIGKILL)
    for left in leftovers(box.tmp):  # what a kill -9 cannot clean up
        shutil.rmtree(left, ignore_errors=True)
    fast = recipe()
    box.write("recipe.yaml", fast)
    third = box.process("run", box.root / "recipe.yaml", "--out", box.out)
    assert third.code == 0, third.stderr


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_step_and_nothing_zero_byte_is_left(box: Sandbox) -> None:
    data = recipe()
    data["model"]["kwargs"] = {"width": 48}  # a model file bigger than the limit
    path = box.write("recipe.yaml", data)
    outcome = box.process("run", path, "--out", box.out, preexec=_file_size_limit(200_000))
    assert outcome.code == 1
    line = outcome.one_line_error()
    said = r"error: no space left to write \S+ in \S+ \(the file size limit is 200,000 bytes\)"
    assert re.fullmatch(said, line), line
    empty = [p for p in box.out.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.name != ".lock"]
    assert not empty, empty
    assert not [p for p in box.out.rglob(".*") if p.name != ".lock"]  # no staging folder, no .partial


@pytest.mark.slow
def test_a_memory_limit_is_one_line_naming_it(box: Sandbox) -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1200 << 20, 1200 << 20))

    path = box.write("recipe.yaml", recipe(export=["onnx", "tflite"]))
    outcome = box.process("run", path, "--out", box.out, preexec=limit)
    assert outcome.code == 1
    line = outcome.one_line_error()
    assert re.fullmatch(r"error: out of memory in \S+ \(the address-space limit is 1,200 MB\)", line), line


@pytest.mark.slow
def test_a_damaged_cache_entry_is_rebuilt_not_trusted(box: Sandbox) -> None:
    path = box.write("recipe.yaml", recipe())
    assert box.cli("run", path, "--out", box.out).code == 0
    cache = box.out / "hostile" / "cache"
    for meta in cache.glob("*/artifact.json"):
        meta.write_text("{not json")  # every entry's record damaged
    outcome = box.cli("run", path, "--out", box.out, "--resume")
    assert outcome.code == 0, outcome.stderr
    results = json.loads(Path(outcome.stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
    assert not any(stage["cached"] for stage in results["stages"])  # nothing reused from a damaged cache
