#!/usr/bin/env python3
"""The device agent: runs one model on one runtime, keeps its outputs and times it.

It needs numpy and the runtime it is asked for (Python 3.8+), nothing of compress: this folder
(agent.py, protocol.py, files.py and backends/) can be copied to a board and run there as it is:

    python agent.py REQUEST.json

The request and the response are the typed records of protocol.py, as JSON; the response is
written to the request's `response` path when given and printed as the last line of stdout.
Backends are found, not listed: `backends/<runtime>.py` beside this file first (the built-ins, and
a plugin's backend that a target copied there), then the `compress.runtimes` entry points of the
Python that runs the agent.

Latency is the runtime's call on inputs already converted to the model's input format (set once,
as benchmark_app and litert-benchmark do); outputs come from separate, untimed calls.

Exit code 0 when ok, 1 when the measurement failed, 2 for a bad request (status "bad_input").
docs/targets.md describes how targets copy this folder to a device and run it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = os.path.join(HERE, "backends")
ENTRY_POINT_GROUP = "compress.runtimes"
_RUNTIME_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def load_path(module_name: str, path: str) -> Any:
    """A module from a file, under a private name (so a backend named torch.py never shadows torch)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load %s" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


try:  # imported as compress.runtimes.agent
    from . import files, protocol
except ImportError:  # run as a script, maybe from a folder copied to a device: siblings by path
    protocol = load_path("_compress_agent_protocol", os.path.join(HERE, "protocol.py"))
    files = load_path("_compress_agent_files", os.path.join(HERE, "files.py"))

Request, Response, BadRequest = protocol.Request, protocol.Response, protocol.BadRequest


class BadInput(ValueError):
    """The request cannot be served as asked (not a failure of the runtime)."""


class MissingRuntime(RuntimeError):
    """The runtime asked for is not installed (or not known) where the agent runs."""


class Device:
    """`cpu`, `cuda`, `cuda:1`, `tensorrt:0`, `gpu:1` parsed once for every backend."""

    def __init__(self, text: str) -> None:
        kind, _, index = text.partition(":")
        if not re.match(r"^[a-z]+$", kind) or (index and not index.isdigit()):
            raise BadInput("device %r is not KIND or KIND:N (cpu, cuda:0, gpu:1, ...)" % text)
        self.text, self.kind = text, kind
        self.index = int(index) if index else 0
        self.explicit_index = bool(index)


# --- backends ---------------------------------------------------------------------------------

def _entry_points() -> dict[str, Any]:
    try:
        from importlib.metadata import entry_points
    except ImportError:  # Python 3.7 boards
        return {}
    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python 3.8 / 3.9: a dict of groups
        found = entry_points().get(ENTRY_POINT_GROUP, [])
    points: dict[str, Any] = {}
    for point in found:
        points.setdefault(point.name, point)  # first wins, as in compress's registry
    return points


def _backend_file(runtime: str) -> str | None:
    path = os.path.join(BACKENDS, runtime + ".py")
    return path if _RUNTIME_NAME.match(runtime) and os.path.isfile(path) else None


def _class_named(module: Any, runtime: str) -> Any:
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "name", None) == runtime and hasattr(value, "run"):
            return value
    raise MissingRuntime("%s defines no backend class named %r" % (getattr(module, "__file__", module), runtime))


def known_runtimes() -> list[str]:
    names = set(_entry_points())
    if os.path.isdir(BACKENDS):
        names.update(f[:-3] for f in os.listdir(BACKENDS) if f.endswith(".py") and _RUNTIME_NAME.match(f[:-3]))
    return sorted(names)


def backend_class(runtime: str) -> Any:
    """The backend class of a runtime: backends/<runtime>.py beside the agent, else an entry point."""
    path = _backend_file(runtime)
    if path is not None:
        return _class_named(load_path("_compress_backend_" + runtime, path), runtime)
    point = _entry_points().get(runtime)
    if point is None:
        raise MissingRuntime("runtime %r is not known to this agent (known: %s)"
                             % (runtime, ", ".join(known_runtimes()) or "none"))
    return point.load()


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(backend: Any) -> list[str]:
    """Import names the backend needs and this Python lacks (found without importing them)."""
    lacking = [m for m in getattr(backend, "requires", ()) if not _importable(m)]
    alternatives = getattr(backend, "requires_any", ())
    if alternatives and not any(_importable(m) for m in alternatives):
        lacking.append(alternatives[0])
    return lacking


def _package_version(names: Any) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:
        return None
    for name in names:
        try:
            return "%s %s" % (name, version(name))
        except PackageNotFoundError:
            continue
    return None


def installed_runtimes() -> dict[str, str]:
    """{runtime: "library version"} for the runtimes this Python can load."""
    found = {}
    for runtime in known_runtimes():
        try:
            backend = backend_class(runtime)
        except Exception:  # a broken plugin backend is not installed as far as the device goes
            continue
        if not missing(backend):
            found[runtime] = _package_version(getattr(backend, "distributions", ())) or "installed"
    return found


def load_backend(runtime: str, model: str, threads: int = 1, device: str = "cpu") -> Any:
    backend = backend_class(runtime)
    lacking = missing(backend)
    if lacking:
        raise MissingRuntime("%s is not installed on this device (python %s at %s; it needs %s): %s"
                             % (runtime, platform.python_version(), sys.executable, ", ".join(lacking),
                                getattr(backend, "install_hint", "")))
    return backend(model, threads, Device(device))


# --- the machine ------------------------------------------------------------------------------

def describe_gpu(device: Device) -> dict[str, Any]:
    """Name, driver and memory of the CUDA GPU a cuda[:N] / tensorrt[:N] device runs on."""
    import subprocess

    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader,nounits", "-i", str(device.index)],
                              capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        name, driver, memory = [part.strip() for part in line[0].split(",")]
        return {"index": device.index, "name": name, "driver": driver, "memory_mb": int(float(memory))}
    except Exception as exc:  # no nvidia-smi, or no answer from it: ask torch, and keep why
        smi_error = "nvidia-smi: %s: %s" % (type(exc).__name__, exc)
    try:
        import torch

        return {"index": device.index, "name": torch.cuda.get_device_name(device.index), "driver": None,
                "cuda": torch.version.cuda, "nvidia_smi_error": smi_error}
    except Exception as exc:
        return {"index": device.index, "error": "%s; torch: %s: %s" % (smi_error, type(exc).__name__, exc)}


def describe_device(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
                            "python": platform.python_version(), "python_executable": sys.executable,
                            "cpu": platform.processor() or platform.machine()}
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and info["cpu"] in ("", platform.machine()):
                    info["cpu"] = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1]
                    break
    except OSError:
        pass
    # int8 is only fast with dot-product instructions: VNNI on x86, asimddp on Arm.
    info["int8_dot_product"] = sorted(set(flags.split()) & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
    # The vector width the fp32 kernels use: with the line above, what latency ratios depend on.
    info["vector_isa"] = sorted(set(flags.split()) & {"avx2", "avx512f", "asimd", "sve"})
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        pass
    info["runtimes"] = installed_runtimes()
    parsed = Device(device)
    if parsed.kind in ("cuda", "tensorrt"):
        info["gpu"] = describe_gpu(parsed)
    return info


# --- running and timing -----------------------------------------------------------------------

def _feeds(arrays: dict[str, Any], names: list[str] | None, start: int, stop: int) -> dict[str, Any]:
    keys = list(arrays)
    if names is None:
        names = keys
    if len(names) != len(keys):
        raise BadInput("the model has %d inputs but %d arrays were given" % (len(names), len(keys)))
    return {name: arrays[key][start:stop] for name, key in zip(names, keys)}


def collect_outputs(backend: Any, arrays: dict[str, Any], batch_size: int) -> list[Any]:
    import numpy

    count = len(next(iter(arrays.values())))
    chunks = [backend.run(_feeds(arrays, backend.input_names, start, start + batch_size))
              for start in range(0, count, batch_size)]
    return [numpy.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def time_runs(run: Any, warmup: int, min_runs: int, min_seconds: float,
              max_seconds: float) -> tuple[list[float], float]:
    """Warm up, then run until both min_runs and min_seconds are reached (or max_seconds)."""
    for _ in range(warmup):
        run()
    times = []
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - started
        if (len(times) >= min_runs and elapsed >= min_seconds) or elapsed >= max_seconds:
            return times, elapsed


def measure_latency(backend: Any, arrays: dict[str, Any], plan: Any, threads: int) -> Any:
    """Timed runs in `trials` rounds; statistics over all runs, plus each round's p50 so a gate can
    compare medians of rounds on a noisy machine."""
    feeds = _feeds(arrays, backend.input_names, 0, plan.batch_size)
    # The runtime's call on inputs already in its own format, as benchmark_app and litert-benchmark
    # time it: converting inputs (e.g. quantizing them for an int8 .tflite) happens once, before.
    call = backend.timed_call(feeds) if hasattr(backend, "timed_call") else (lambda: backend.run(feeds))
    times: list[float] = []
    elapsed, trial_p50 = 0.0, []
    for trial in range(plan.trials):
        round_times, round_elapsed = time_runs(call, plan.warmup if trial == 0 else 0, plan.min_runs,
                                               plan.min_seconds, plan.max_seconds)
        times.extend(round_times)
        elapsed += round_elapsed
        trial_p50.append(percentile(sorted(round_times), 50))
    ordered = sorted(times)
    mean = sum(times) / len(times)
    return protocol.LatencyStats(
        p50_ms=percentile(ordered, 50), p90_ms=percentile(ordered, 90), p99_ms=percentile(ordered, 99),
        mean_ms=mean, min_ms=ordered[0], max_ms=ordered[-1], runs=len(times), seconds=elapsed,
        throughput_per_s=1000.0 * plan.batch_size / mean if mean > 0 else float("inf"),
        batch_size=plan.batch_size, threads=threads, warmup=plan.warmup, trial_p50_ms=trial_p50)


def random_inputs(specs: list[tuple[str, list[int | None], str]], shapes: dict[str, list[int]], batch: int,
                  seed: int) -> dict[str, Any]:
    """Inputs for a benchmark: the model's own input specs, dynamic dimensions from `shapes`."""
    import numpy

    rng = numpy.random.default_rng(seed)
    arrays = {}
    for name, shape, dtype in specs:
        given = shapes.get(name) or (shapes.get("*") if len(specs) == 1 else None)
        if given is not None:
            if len(given) != len(shape):
                raise BadInput("input %r has %d dimensions; --input-shape gave %d" % (name, len(shape), len(given)))
            shape = list(given)
        elif shape and shape[0] is None:
            shape = [batch, *shape[1:]]
        if any(d is None for d in shape):
            raise BadInput("input %r has dynamic dimensions %s: give them with --input-shape %s=..."
                           % (name, ["?" if d is None else d for d in shape], name))
        if dtype.startswith("float"):
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            arrays[name] = numpy.ones(shape, dtype=bool)
        else:
            arrays[name] = rng.integers(0, 2, size=shape).astype(dtype)
    if not arrays:
        raise BadInput("the model does not describe its inputs: give them with --input-shape")
    return arrays


def _read_inputs(path: str) -> dict[str, Any]:
    import zipfile

    import numpy

    try:
        with numpy.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInput("cannot read the inputs %s as .npz: %s" % (os.path.basename(path), one_line(exc))) from None
    if not arrays:
        raise BadInput("the inputs file holds no arrays")
    counts = {len(a) if a.ndim else 0 for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise BadInput("every input array needs the same number of samples, at least one")
    return arrays


def serve(request: Any) -> Any:
    for name in _THREAD_VARIABLES:  # before the runtime (and its OpenMP pool) is imported
        os.environ[name] = str(request.threads)
    import numpy

    backend = load_backend(request.runtime, request.model, request.threads, request.device)
    if request.inputs:
        arrays = _read_inputs(request.inputs)
    else:
        generate = request.random_inputs or protocol.RandomInputs()
        arrays = random_inputs(backend.input_specs(), generate.shapes, generate.batch, generate.seed)
    if request.input_transpose:  # e.g. NCHW data for a channels-last artifact
        axes = request.input_transpose
        arrays = {key: numpy.ascontiguousarray(value.transpose(axes)) for key, value in arrays.items()}
    response = Response(ok=True, status="ok", device=describe_device(request.device),
                        inputs={key: list(value.shape) for key, value in arrays.items()},
                        runtime=protocol.RuntimeInfo(name=backend.name, version=backend.version,
                                                     device=request.device))
    if request.outputs:
        outputs = collect_outputs(backend, arrays, request.batch_size)
        with open(request.outputs, "wb") as handle:
            numpy.savez(handle, **{"output_%d" % i: o for i, o in enumerate(outputs)})
        response.outputs = request.outputs
    if request.latency is not None:
        response.latency = measure_latency(backend, arrays, request.latency, request.threads)
    return response


def one_line(exc: BaseException) -> str:
    """An error's own message on one line, its cause kept: runtimes put the reason after a line that
    only says where in their source the exception came from (OpenVINO's "Exception from
    src/inference/src/cpp/core.cpp:84:")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if not re.match(r"^(Exception from src/|Check '.*' failed at src/)", line)]
    text = "; ".join(telling or lines)
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: list[str]) -> int:
    # Run as a script, this file's folder comes first on sys.path: keep it out, so that nothing
    # beside the agent can shadow a library the runtime imports.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    if len(argv) != 2:
        print("usage: agent.py REQUEST.json", file=sys.stderr)
        return 2
    request = None
    try:
        with open(argv[1]) as handle:
            request = Request.from_json(json.load(handle))
        response = serve(request)
        code = 0
    except BadRequest as exc:
        response, code = Response.failure("bad_input", "bad request: %s" % one_line(exc)), 2
    except BadInput as exc:
        response, code = Response.failure("bad_input", one_line(exc)), 2
    except MissingRuntime as exc:
        response, code = Response.failure("failed", str(exc), device=describe_device()), 1
    except Exception as exc:  # any runtime failure becomes a one-line error in the response
        if request is None:
            response, code = Response.failure("bad_input", "bad request: cannot read it: %s" % one_line(exc)), 2
        else:
            response, code = Response.failure("failed", "%s: %s" % (type(exc).__name__, one_line(exc))), 1
    text = json.dumps(response.to_json())
    if request is not None and request.response:
        files.write_atomic(request.response, text)
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
