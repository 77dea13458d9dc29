"""The one way a measurement is asked of the device agent, for `compress run` and `compress bench`."""

from __future__ import annotations

from pathlib import Path

from compress.runtimes.protocol import LatencyPlan, RandomInputs, Request


def latency_plan(*, warmup: int, min_runs: int, min_seconds: float, batch_size: int, trials: int = 1) -> LatencyPlan:
    # A measurement stops at 10x its minimum time (at least a minute) even if min_runs is not reached.
    return LatencyPlan(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, batch_size=batch_size,
                       trials=trials, max_seconds=max(10 * min_seconds, 60.0))


def agent_request(model: Path, runtime: str, *, threads: int, latency: LatencyPlan | None, device: str = "cpu",
                  inputs: Path | None = None, random_inputs: RandomInputs | None = None, outputs: Path | None = None,
                  batch_size: int = 64, input_transpose: list[int] | None = None) -> Request:
    return Request(model=str(model.resolve()), runtime=runtime, device=device, threads=threads,
                   inputs=str(inputs) if inputs else None, random_inputs=random_inputs,
                   outputs=str(outputs) if outputs else None, batch_size=batch_size, latency=latency,
                   input_transpose=input_transpose)
