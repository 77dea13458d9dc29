"""The local target: the device agent in a separate process on this machine.

A crash or hang of a runtime ends that measurement only; a timeout kills the agent's whole
process group so nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

AGENT = Path(__file__).with_name("agent.py")
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


class LocalTarget:
    """`local`: this machine's CPU, the agent run by this Python."""

    name = "local"
    host = "localhost"

    def prepare(self) -> None:
        """Nothing to connect to."""

    def measure(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        threads = str(request.get("threads", 1))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
               "OPENBLAS_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        request = {**request, "python_path": [_PROJECT_ROOT, *request.get("python_path", [])]}
        with tempfile.TemporaryDirectory(prefix="compress-agent-") as scratch:
            request_file = Path(scratch) / "request.json"
            response_file = Path(scratch) / "response.json"
            request_file.write_text(json.dumps({**request, "response": str(response_file)}))
            process = subprocess.Popen([sys.executable, str(AGENT), str(request_file)], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
            try:
                _, stderr = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                return {"ok": False, "status": "timeout",
                        "error": f"the measurement did not finish within {timeout_s:g} s and was killed"}
            if response_file.is_file():
                response = json.loads(response_file.read_text())
                response.setdefault("status", "ok" if response.get("ok") else "failed")
                return response
            tail = (stderr or "").strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
            return {"ok": False, "status": "failed",
                    "error": f"the agent crashed (exit code {process.returncode}): {tail[0]}"}
