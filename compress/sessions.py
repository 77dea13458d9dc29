"""Running a model file in this process, on the device side's own backends: what format plugins
check an export with and what accuracy-aware int8 scores candidates with (compress.contracts.RunOutputs).
Measurements that are reported run in the agent's own process instead (compress.verify)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import StageError

if TYPE_CHECKING:
    import numpy as np


def run_outputs(runtime: str, path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from compress.runtimes import agent

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        backend = agent.load_backend(runtime, str(path), threads=threads)
    except agent.MissingRuntime as exc:
        raise StageError(str(exc)) from None
    return backend.run(feeds)
