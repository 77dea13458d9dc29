"""The local target: the device agent in a separate process on this machine.

A crash or hang of a runtime ends that measurement only; a timeout kills the agent's whole
process group so nothing is left running. The groups of agents still running are known, so a run
that is interrupted can end them too (`stop_all`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ..protocol import Request, Response

AGENT = Path(__file__).resolve().parent.parent / "agent.py"
_running: set[int] = set()
_lock = threading.Lock()


def stop_all() -> None:
    """Kill every agent process group this process started and that is still running."""
    with _lock:
        groups = list(_running)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def run_agent(request: Request, timeout_s: float, env: dict[str, str] | None = None) -> Response:
    """Run the agent on `request` in its own process group, here; kill the group at the timeout."""
    threads = str(request.threads)
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="compress-agent-") as scratch:
        request_file = Path(scratch) / "request.json"
        response_file = Path(scratch) / "response.json"
        request_file.write_text(json.dumps(request.replace(response=str(response_file)).to_json()))
        process = subprocess.Popen([sys.executable, str(AGENT), str(request_file)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        with _lock:
            _running.add(process.pid)
        try:
            _, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return Response.failure("timeout", f"the measurement did not finish within {timeout_s:g} s and was killed")
        finally:
            with _lock:
                _running.discard(process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # anything the agent left behind in its group
        if response_file.is_file():
            try:
                return Response.from_json(json.loads(response_file.read_text()))
            except ValueError:
                pass
        tail = (stderr or "").strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
        how = f"signal {-process.returncode}" if process.returncode < 0 else f"exit code {process.returncode}"
        return Response.failure("failed", f"the agent crashed ({how}): {tail[0]}")


class LocalTarget:
    """`local`: this machine's CPU, the agent run by this Python."""

    name = "local"
    host = "localhost"

    def prepare(self) -> None:
        """Nothing to connect to."""

    def measure(self, request: Request, timeout_s: float) -> Response:
        return run_agent(request, timeout_s)
