"""`adb://[SERIAL][?options]`: an Android device (or any adb device) over adb (docs/targets.md).

Two ways to measure, chosen by option:
- `benchmark_model=/data/local/tmp/benchmark_model`: TensorFlow Lite's benchmark binary, which the
  user pushed there. Only .tflite models; it keeps no outputs, so accuracy is not measured on the
  device, and it prints mean/min/max (median and p95 on newer builds), not every percentile.
- `python=/path/to/python3`: the device agent, where the device has Python, numpy and a runtime
  (Termux, a Linux board reached over adb): the same request, latencies and outputs as `ssh://`.

Other options: adb (the adb binary here; default the one on PATH), tmpdir (default
/data/local/tmp), transfer_timeout (s, default 300).

Serials are checked against [A-Za-z0-9._:-]+ before anything runs; adb gets argument lists (no
local shell) and every word of a remote command is quoted with shlex.quote. `adb devices -l`
decides whether the device is there: offline, unauthorized, missing, or several devices attached
without a serial are one-line errors. A timeout kills the remote process group (adbd starts each
shell in its own session) and the private folder is removed whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..protocol import LatencyStats, Request, Response, RuntimeInfo
from . import TargetError, remote

OPTIONS = {"benchmark_model": "path on the device", "python": "path on the device", "adb": "adb binary here",
           "tmpdir": "folder on the device", "transfer_timeout": "seconds"}
SERIAL = re.compile(r"[A-Za-z0-9._:-]+")
_EXIT = "compress-exit:"
_TIMINGS = re.compile(r"Inference timings in us: Init: ([\d.e+]+), First inference: ([\d.e+]+), "
                      r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)")
_STAT = re.compile(r"count=(\d+) first=\S+ curr=\S+ min=([\d.e+]+) max=([\d.e+]+) avg=([\d.e+]+) std=\S+"
                   r"(?: p5=\S+ median=([\d.e+]+) p95=([\d.e+]+))?")
_DEVICE_STATES = {
    "offline": "is offline: reconnect it (or run adb kill-server, then adb devices)",
    "unauthorized": "has not authorized this computer: unlock it and accept the USB debugging prompt",
    "authorizing": "is still authorizing this computer: accept the prompt on the device",
    "no permissions": "cannot be opened (no permissions): check the udev rules for adb",
    "connecting": "is still connecting",
    "bootloader": "is in the bootloader, not running Android",
    "recovery": "is in recovery mode",
    "sideload": "is in sideload mode",
}


def parse_devices(text: str) -> list[tuple[str, str]]:
    """(serial, state) for each line of `adb devices -l` output."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        serial, _, rest = line.partition(" ") if "\t" not in line else line.partition("\t")
        rest = rest.strip()
        state = "no permissions" if rest.startswith("no permissions") else rest.split(" ", 1)[0]
        devices.append((serial.strip(), state))
    return devices


def parse_benchmark(text: str, threads: int, warmup: int) -> LatencyStats:
    """benchmark_model's summary as the agent's latency record (milliseconds)."""
    timings = _TIMINGS.search(text)
    stats = [m for m in _STAT.finditer(text)]
    if not timings or not stats:
        raise ValueError("benchmark_model printed no 'Inference timings in us' summary")
    stat = stats[-1]  # the last statistics line is the timed runs (the first is the warm-up)
    count, low, high, mean = int(stat.group(1)), float(stat.group(2)), float(stat.group(3)), float(stat.group(4))
    median = float(stat.group(5)) if stat.group(5) else mean
    upper = float(stat.group(6)) if stat.group(6) else high
    mean_ms = float(timings.group(4)) / 1000.0
    return LatencyStats(p50_ms=median / 1000.0, p90_ms=upper / 1000.0, p99_ms=upper / 1000.0, mean_ms=mean_ms,
                        min_ms=low / 1000.0, max_ms=high / 1000.0, runs=count, seconds=count * mean / 1e6,
                        throughput_per_s=1000.0 / mean_ms if mean_ms > 0 else 0.0, batch_size=1, threads=threads,
                        warmup=warmup, trial_p50_ms=[median / 1000.0])


class AdbTarget:
    def __init__(self, serial: str | None = None, *, benchmark_model: str | None = None, python: str | None = None,
                 adb: str | None = None, tmpdir: str = "/data/local/tmp", transfer_timeout: float = 300.0) -> None:
        self.serial, self.benchmark_model, self.python = serial, benchmark_model, python
        self.adb, self.tmpdir, self.transfer_timeout = adb, tmpdir, transfer_timeout
        self.name = f"adb://{serial or ''}"
        self.host = f"adb:{serial or '(the only device)'}"
        self._resolved: str | None = None

    @classmethod
    def from_spec(cls, spec: str) -> AdbTarget:
        if not spec.startswith("adb://"):
            raise ValueError("expected adb://SERIAL[?option=value&...]")
        rest = spec[len("adb://"):]
        serial, _, query = rest.partition("?")
        serial = serial.rstrip("/")
        if serial and not SERIAL.fullmatch(serial):
            raise ValueError(f"{serial!r} is not a device serial (letters, digits and . _ : - only)")
        if urlsplit(spec).fragment:
            raise ValueError("a target has no #fragment")
        options = remote.parse_options(query, OPTIONS)
        bench = remote.remote_word(options, "benchmark_model", "") or None
        python = remote.remote_word(options, "python", "") or None
        if bool(bench) == bool(python):
            raise ValueError("give one of ?benchmark_model=/data/local/tmp/benchmark_model (TFLite's benchmark "
                             "binary on the device) or ?python=/path/to/python3 (the agent, where the device has "
                             "Python)")
        tmpdir = options.get("tmpdir", "/data/local/tmp")
        if not remote.REMOTE_DIR.fullmatch(tmpdir):
            raise ValueError(f"option tmpdir={tmpdir!r} must be an absolute path of letters, digits and ._/-")
        adb = options.get("adb")
        if adb is not None and not Path(adb).expanduser().is_file():
            raise ValueError(f"option adb: {adb} is not a file")
        return cls(serial or None, benchmark_model=bench, python=python,
                   adb=str(Path(adb).expanduser()) if adb else None, tmpdir=tmpdir,
                   transfer_timeout=remote.positive_float(options, "transfer_timeout", 300.0))

    # -- adb -------------------------------------------------------------------------------------

    def _binary(self) -> str:
        found = self.adb or shutil.which("adb")
        if not found:
            raise TargetError(f"target {self.name}: adb is not installed here (install Android platform-tools, "
                             "or give its path with ?adb=/path/to/adb)")
        return found

    def _adb(self, *args: str, timeout: float, serial: bool = True) -> subprocess.CompletedProcess:
        argv = [self._binary()]
        if serial:
            argv += ["-s", self._device()]
        return subprocess.run([*argv, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)

    def _shell(self, command: str, timeout: float) -> tuple[int | None, str, str]:
        """Run one remote command (its words already quoted); its exit code read from a marker line
        (adb before Android 7 does not pass the exit code on)."""
        done = self._adb("shell", f"{command}; echo {_EXIT}$?", timeout=timeout)
        out = done.stdout.decode(errors="replace")
        code = None
        lines = out.rstrip("\n").split("\n")
        if lines and lines[-1].strip().startswith(_EXIT):
            with contextlib.suppress(ValueError):
                code = int(lines[-1].strip()[len(_EXIT):])
            out = "\n".join(lines[:-1])
        return code, out, done.stderr.decode(errors="replace")

    def _device(self) -> str:
        if self._resolved is None:
            self.prepare()
        assert self._resolved is not None
        return self._resolved

    def prepare(self) -> None:
        """The device is attached and ready (adb devices -l), and what it runs is there."""
        try:
            done = self._adb("devices", "-l", timeout=60, serial=False)
        except subprocess.TimeoutExpired:
            raise TargetError(f"target {self.name}: adb devices did not answer within 60 s") from None
        if done.returncode != 0:
            raise TargetError(f"target {self.name}: adb devices failed: {remote.last_line(done.stderr)}")
        devices = parse_devices(done.stdout.decode(errors="replace"))
        listed = ", ".join(f"{s} ({state})" for s, state in devices) or "none attached"
        if self.serial is None:
            if not devices:
                raise TargetError(f"target {self.name}: no device is attached (adb devices lists none)")
            if len(devices) > 1:
                raise TargetError(f"target {self.name}: several devices are attached ({listed}); name one, "
                                 f"e.g. adb://{devices[0][0]}")
            serial, state = devices[0]
        else:
            matches = [d for d in devices if d[0] == self.serial]
            if not matches:
                raise TargetError(f"target {self.name}: no device with serial {self.serial} is attached "
                                 f"(adb devices: {listed})")
            serial, state = matches[0]
        if state != "device":
            reason = _DEVICE_STATES.get(state, f"is in state {state!r}, not ready")
            raise TargetError(f"target {self.name}: device {serial} {reason}")
        self._resolved = serial
        program = self.benchmark_model or self.python
        assert program is not None
        try:
            code, _, _ = self._shell(f"test -x {shlex.quote(program)}", timeout=60)
        except subprocess.TimeoutExpired:
            raise TargetError(f"target {self.name}: adb shell did not answer within 60 s") from None
        if code != 0:
            what = "benchmark_model" if self.benchmark_model else "python"
            raise TargetError(f"target {self.name}: {what} {program} is not an executable file on the device"
                             + (" (push TFLite's benchmark_model there and chmod +x it)" if self.benchmark_model
                                else ""))

    # -- the Target contract ---------------------------------------------------------------------

    def measure(self, request: Request, timeout_s: float) -> Response:
        model = Path(request.model)
        if self.benchmark_model and (request.runtime != "litert" or model.suffix.lower() != ".tflite"):
            return Response.failure("failed", f"benchmark_model runs .tflite models (runtime litert) only, not "
                                              f"{request.runtime} {model.name}; give ?python=... to run the agent on "
                                              f"{self.name}")
        if request.device != "cpu" and self.benchmark_model:
            return Response.failure("failed", "benchmark_model measures the CPU here (device cpu)")
        folder: str | None = None
        try:
            try:
                code, out, err = self._shell(f"umask 077 && mktemp -d {shlex.quote(self.tmpdir)}/compress-agent."
                                             "XXXXXXXX", timeout=self.transfer_timeout)
            except subprocess.TimeoutExpired:
                return Response.failure("timeout", f"adb shell on {self.name} did not answer")
            candidate = out.strip().splitlines()[-1] if out.strip() else ""
            if code != 0 or not remote.REMOTE_DIR.fullmatch(candidate):
                return Response.failure("failed", f"mktemp -d on {self.name} failed: "
                                                  f"{remote.last_line(err or out, 'no output')}")
            folder = candidate
            with tempfile.TemporaryDirectory(prefix="compress-adb-") as scratch:
                if self.benchmark_model:
                    return self._benchmark(folder, request, timeout_s)
                return self._agent(folder, request, timeout_s, Path(scratch))
        except subprocess.TimeoutExpired:
            return Response.failure("timeout", f"copying to or from {self.name} took more than "
                                               f"{self.transfer_timeout:g} s")
        finally:
            if folder is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._shell(f"rm -rf {shlex.quote(folder)}", timeout=60)

    def _push(self, local: Path, remote_path: str) -> str | None:
        done = self._adb("push", str(local), remote_path, timeout=self.transfer_timeout)
        return None if done.returncode == 0 else remote.last_line(done.stderr or done.stdout, "adb push failed")

    def _run_timed(self, folder: str, program: str, args: list[str], timeout_s: float
                   ) -> tuple[Response | None, int | None, str, str]:
        try:
            code, out, err = self._shell(remote.run_in_group_command(folder, program, args, replace_shell=False),
                                         timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._shell(remote.kill_group_command(folder), timeout=60)
            return (Response.failure("timeout", f"the measurement on {self.name} did not finish within {timeout_s:g} s "
                                                "and was killed"), None, "", "")
        if code is None:
            return (Response.failure("incomplete", f"the adb connection to {self.name} ended during the measurement "
                                                   f"({remote.last_line(err or out, 'no message')})"), None, out, err)
        return None, code, out, err

    def _benchmark(self, folder: str, request: Request, timeout_s: float) -> Response:
        failure = self._push(Path(request.model), f"{folder}/model.tflite")
        if failure:
            return Response.failure("failed", f"adb push to {self.name} failed: {failure}")
        plan = request.latency
        warmup = plan.warmup if plan else 10
        args = [f"--graph={folder}/model.tflite", f"--num_threads={request.threads}", f"--warmup_runs={warmup}",
                f"--num_runs={plan.min_runs if plan else 50}",
                f"--min_secs={float(plan.min_seconds if plan else 1.0)}",
                f"--max_secs={float(plan.max_seconds if plan else 120.0)}"]
        assert self.benchmark_model is not None
        failure_response, code, out, err = self._run_timed(folder, self.benchmark_model, args, timeout_s)
        if failure_response:
            return failure_response
        if code != 0:
            return Response.failure("failed", f"benchmark_model on {self.name} failed (exit code {code}): "
                                              f"{remote.last_line(err or out, 'no output')}")
        try:
            stats = parse_benchmark(out, request.threads, warmup)
        except ValueError as exc:
            return Response.failure("failed", f"{self.name}: {exc}")
        return Response(ok=True, status="ok", runtime=RuntimeInfo(name="litert", version="benchmark_model"),
                        device={"serial": self._resolved, "benchmark_model": self.benchmark_model}, latency=stats)

    def _agent(self, folder: str, request: Request, timeout_s: float, scratch: Path) -> Response:
        bundle = scratch / "bundle.tar"
        try:
            remote.pack(request, bundle)
        except OSError as exc:
            return Response.failure("failed", f"cannot pack the request: {exc}")
        failure = self._push(bundle, f"{folder}/bundle.tar")
        if failure:
            return Response.failure("failed", f"adb push to {self.name} failed: {failure}")
        code, out, err = self._shell(f"cd {shlex.quote(folder)} && tar -xf bundle.tar && rm bundle.tar",
                                     timeout=self.transfer_timeout)
        if code != 0:
            return Response.failure("failed", f"unpacking on {self.name} failed: "
                                              f"{remote.last_line(err or out, 'no output')}")
        assert self.python is not None
        failure_response, code, out, err = self._run_timed(folder, self.python, ["agent.py", remote.REQUEST],
                                                           timeout_s)
        if failure_response:
            return failure_response
        response_file = scratch / remote.RESPONSE
        pulled = self._adb("pull", f"{folder}/{remote.RESPONSE}", str(response_file), timeout=self.transfer_timeout)
        try:
            data = json.loads(response_file.read_text()) if pulled.returncode == 0 else None
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            return Response.failure("failed", f"the agent on {self.name} crashed (exit code {code}): "
                                              f"{remote.last_line(err or out, 'no output')}")
        response = Response.from_json(data)
        if response.ok and request.outputs:
            pulled = self._adb("pull", f"{folder}/{remote.OUTPUTS}", str(request.outputs),
                               timeout=self.transfer_timeout)
            if pulled.returncode != 0:
                return Response.failure("incomplete", f"{self.name} sent no outputs back: "
                                                      f"{remote.last_line(pulled.stderr)}")
            response.outputs = request.outputs
        return response
