"""One sweep trial, as a Ray task: the recipe with the trial's overrides, run by the pipeline.

Trials share the content-hash cache (the steps they have in common are built once, under the key's
lock) and measure through one queue per device (`DeviceQueue`, a Ray actor that runs one
measurement at a time), so training and export run in parallel but no two latencies are measured on
one device at once. A trial is idempotent: run again after its worker died, it first looks for the
run it already finished.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any


def finished_run(trial_dir: Path) -> Path | None:
    """The trial's completed run folder, if an earlier attempt finished one."""
    for results in sorted(trial_dir.glob("*/*/results.json")):
        run = results.parent
        if not run.name.startswith(".") and not run.name.endswith(".failed"):
            return run
    return None


def attempts(trial_dir: Path) -> int:
    path = trial_dir / "attempts.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def run_trial(recipe: str, overrides: list[str], trial_dir: str, cache: str, queues: dict[str, Any]) -> dict[str, Any]:
    """Run one trial; a bad configuration is a failed trial (returned), never an exception to retry."""
    import fcntl

    folder = Path(trial_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "attempts.jsonl", "a") as log:  # what the test of a killed worker reads
        log.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}) + "\n")
    # One attempt at a time: an earlier attempt that outlived its driver (a worker not yet told)
    # holds this lock until it ends; then its finished run is found here, or it left none.
    with open(folder / ".attempt.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = finished_run(folder)
        if done is not None:
            return {"status": "ok", "run": str(done)}
        return _run(recipe, overrides, folder, cache, queues)


def _run(recipe: str, overrides: list[str], folder: Path, cache: str, queues: dict[str, Any]) -> dict[str, Any]:
    from rich.console import Console

    from compress.errors import CompressError
    from compress.pipeline import Pipeline, RunOptions
    from compress.recipe import load_recipe

    started = time.perf_counter()
    with open(folder / "console.log", "a") as console_file:
        console = Console(file=console_file, width=120, log_path=False)
        try:
            plan = load_recipe(recipe, overrides)
            specs = {target.name: spec for target, spec in zip(plan.targets, plan.recipe.verify.targets, strict=True)}

            def measure(target: Any, request: Any, timeout_s: float) -> Any:
                import ray

                queue = queues[target.host]
                return ray.get(queue.measure.remote(specs[target.name], request, timeout_s))

            options = RunOptions(out=folder, cache=Path(cache), measure=measure if queues else None)
            outcome = Pipeline(plan, options, console).run()
        except CompressError as exc:
            return {"status": "failed", "error": str(exc), "seconds": time.perf_counter() - started}
    return {"status": "ok", "run": str(outcome.folder), "seconds": time.perf_counter() - started}


class DeviceQueue:
    """One device's measurements, one at a time (an actor runs one call at a time): the targets on
    one host are resolved and prepared here, once."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._targets: dict[str, Any] = {}

    def measure(self, spec: str, request: Any, timeout_s: float) -> Any:
        from compress.targets import prepare, resolve

        if spec not in self._targets:
            target = resolve(spec)
            prepare(target)
            self._targets[spec] = target
        return self._targets[spec].measure(request, timeout_s)
