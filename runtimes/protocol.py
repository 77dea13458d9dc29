"""The agent's protocol (version 1): a typed request in, a typed response out, both plain JSON.

Device side: Python 3.8+, standard library only, so this file can be copied to a board beside the
agent. The JSON keys are the protocol; docs/targets.md describes them for other implementations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PROTOCOL = 1
# ok; failed (the runtime or the agent failed); timeout (killed at its time limit); bad_input (the
# request cannot be served as asked); incomplete (a remote connection dropped: never a pass).
STATUSES = ("ok", "failed", "timeout", "bad_input", "incomplete")


class BadRequest(ValueError):
    """A request that does not follow the protocol (a field missing or of the wrong type)."""


def _typed(data: dict[str, Any], key: str, kinds: Any, default: Any = None, required: bool = False) -> Any:
    if key not in data or data[key] is None:
        if required:
            raise BadRequest("request field %r is missing" % key)
        return default
    value = data[key]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise BadRequest("request field %r must not be true/false" % key)
    if not isinstance(value, kinds):
        raise BadRequest("request field %r has type %s" % (key, type(value).__name__))
    return value


@dataclass
class LatencyPlan:
    """How to time: warm-up calls, then at least `min_runs` calls and `min_seconds`, at most
    `max_seconds`, in `trials` rounds, each call on `batch_size` samples."""

    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 120.0
    batch_size: int = 1
    trials: int = 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyPlan:
        if not isinstance(data, dict):
            raise BadRequest("request field 'latency' must be a mapping")
        plan = cls(warmup=_typed(data, "warmup", int, 10), min_runs=_typed(data, "min_runs", int, 50),
                   min_seconds=float(_typed(data, "min_seconds", (int, float), 1.0)),
                   max_seconds=float(_typed(data, "max_seconds", (int, float), 120.0)),
                   batch_size=_typed(data, "batch_size", int, 1), trials=_typed(data, "trials", int, 1))
        if plan.warmup < 0 or plan.min_runs < 1 or plan.batch_size < 1 or plan.trials < 1 or plan.min_seconds < 0:
            raise BadRequest("latency needs warmup >= 0, min_runs >= 1, batch_size >= 1, trials >= 1")
        return plan


@dataclass
class RandomInputs:
    """Inputs made from the model's own input specs (for a benchmark without data)."""

    shapes: dict[str, list[int]] = field(default_factory=dict)
    batch: int = 1
    seed: int = 0


@dataclass
class Request:
    model: str  # a model file, or a folder (an OpenVINO IR, a torch artifact)
    runtime: str  # the backend's name: onnxruntime, openvino, litert, torch, or a plugin's
    device: str = "cpu"  # cpu, cuda[:N] / tensorrt[:N] (onnxruntime, torch), gpu[:N] (openvino)
    threads: int = 1  # set before the runtime is imported
    inputs: str | None = None  # .npz of named arrays, samples on the first axis
    random_inputs: RandomInputs | None = None
    batch_size: int = 64  # batch for collecting outputs
    outputs: str | None = None  # where to write the outputs (.npz, output_0, output_1, ...)
    latency: LatencyPlan | None = None
    input_transpose: list[int] | None = None  # axes every input is transposed by first
    response: str | None = None  # where to write the response JSON
    protocol: int = PROTOCOL

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Request:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, data: Any) -> Request:
        if not isinstance(data, dict):
            raise BadRequest("a request is a JSON object")
        if data.get("protocol") != PROTOCOL:
            raise BadRequest("protocol %r is not %d" % (data.get("protocol"), PROTOCOL))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadRequest("unknown request field %r" % unknown[0])
        random = _typed(data, "random_inputs", dict)
        latency = _typed(data, "latency", dict)
        transpose = _typed(data, "input_transpose", list)
        if transpose is not None and not all(isinstance(a, int) and not isinstance(a, bool) for a in transpose):
            raise BadRequest("request field 'input_transpose' must list integers")
        request = cls(
            model=_typed(data, "model", str, required=True), runtime=_typed(data, "runtime", str, required=True),
            device=_typed(data, "device", str, "cpu"), threads=_typed(data, "threads", int, 1),
            inputs=_typed(data, "inputs", str),
            random_inputs=None if random is None else RandomInputs(
                shapes={str(k): [int(d) for d in v] for k, v in (random.get("shapes") or {}).items()},
                batch=int(random.get("batch", 1)), seed=int(random.get("seed", 0))),
            batch_size=_typed(data, "batch_size", int, 64), outputs=_typed(data, "outputs", str),
            latency=None if latency is None else LatencyPlan.from_json(latency),
            input_transpose=transpose, response=_typed(data, "response", str))
        if request.threads < 1 or request.batch_size < 1:
            raise BadRequest("threads and batch_size must be at least 1")
        return request


@dataclass
class LatencyStats:
    """Milliseconds per call of `batch_size` samples over `runs` timed calls (after `warmup`) taking
    `seconds`; `throughput_per_s` is samples per second; `trial_p50_ms` the p50 of each round."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    runs: int
    seconds: float
    throughput_per_s: float
    batch_size: int
    threads: int
    warmup: int
    trial_p50_ms: list[float] = field(default_factory=list)


@dataclass
class RuntimeInfo:
    name: str
    version: str
    device: str = "cpu"


@dataclass
class Response:
    ok: bool
    status: str
    error: str | None = None
    runtime: RuntimeInfo | None = None
    device: dict[str, Any] = field(default_factory=dict)  # machine, cpu, python, runtimes, gpu, ...
    inputs: dict[str, list[int]] = field(default_factory=dict)  # the shapes fed
    outputs: str | None = None
    latency: LatencyStats | None = None
    protocol: int = PROTOCOL

    @classmethod
    def failure(cls, status: str, error: str, **more: Any) -> Response:
        return cls(ok=False, status=status, error=error, **more)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Response:
        """A response read back from an agent (maybe another version, maybe damaged): anything that
        is not a well-formed response is a failure, never a pass."""
        if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
            return cls.failure("failed", "the agent's response is not a protocol %d response" % PROTOCOL)
        status = data.get("status") if data.get("status") in STATUSES else ("ok" if data["ok"] else "failed")
        if status == "ok" and not data["ok"]:
            status = "failed"
        try:
            runtime = RuntimeInfo(**data["runtime"]) if isinstance(data.get("runtime"), dict) else None
            latency = LatencyStats(**data["latency"]) if isinstance(data.get("latency"), dict) else None
        except TypeError as exc:
            return cls.failure("failed", "the agent's response is malformed: %s" % exc)
        return cls(ok=bool(data["ok"]) and status == "ok", status=status, error=data.get("error"), runtime=runtime,
                   device=data.get("device") if isinstance(data.get("device"), dict) else {},
                   inputs=data.get("inputs") if isinstance(data.get("inputs"), dict) else {},
                   outputs=data.get("outputs"), latency=latency)
