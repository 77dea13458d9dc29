"""`compress bench MODEL`: time a model file of any installed format (.onnx, .xml, .tflite, .pt2, a
plugin's) on this machine or on a target (`--target cuda:0`, `ssh://pi@board`, `adb://SERIAL`),
without a recipe, through the same device agent and statistics as `compress run`. The file's format
plugin says which runtimes load it and refuses a file that is unsafe to load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress import registry
from compress.errors import InputError
from compress.measure import agent_request, latency_plan
from compress.runtimes.protocol import RandomInputs, Response


@dataclass(frozen=True)
class BenchRow:
    runtime: str
    threads: int
    response: Response


def parse_input_shapes(values: tuple[str, ...]) -> dict[str, list[int]]:
    """'input=1,3,224,224' or '1x3x224x224' (for a model with one input)."""
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, _, dims = value.rpartition("=")
        try:
            shape = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            raise InputError(f"--input-shape {value!r}: dimensions must be integers (e.g. input=1,3,224,224)") from None
        if not shape or any(d <= 0 for d in shape):
            raise InputError(f"--input-shape {value!r}: dimensions must be positive integers")
        shapes[name or "*"] = shape
    return shapes


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--threads {text!r}: expected numbers such as 1,2") from None
    if not threads or any(t <= 0 for t in threads):
        raise InputError(f"--threads {text!r}: expected positive numbers such as 1,2")
    return threads


def format_of(model: Path) -> tuple[str, Any]:
    """The installed format plugin whose suffixes name this file."""
    suffix = model.suffix.lower()
    found: dict[str, tuple[str, Any]] = {}
    for name in registry.names("compress.formats"):
        try:
            plugin = registry.load("compress.formats", name)
        except InputError:
            continue  # a broken plugin format is not one this file can be
        for known in plugin.suffixes:
            found.setdefault(known.lower(), (name, plugin))
    if suffix not in found:
        raise InputError(f"cannot benchmark {model.name}: expected one of {', '.join(sorted(found))}", file=str(model))
    return found[suffix]


def runtimes_for(model: Path, runtime: str | None, trust: bool) -> tuple[str, list[str]]:
    name, plugin = format_of(model)
    if not model.exists():
        raise InputError("model file not found", file=str(model))
    if plugin.loads_code and not trust:
        raise InputError(f"{model.name} is a {name} file; loading it runs code from the file. "
                         "Pass --trust only if you trust its source", file=str(model))
    plugin().check_file(model)
    loaders = list(plugin.runtimes)
    if runtime is None:
        chosen = [loaders[0]]
    elif runtime == "all":
        chosen = loaders
    elif runtime in loaders:
        chosen = [runtime]
    else:
        raise InputError(f"runtime {runtime!r} does not load {model.suffix} files (use {', '.join(loaders)})",
                         field="--runtime")
    for choice in chosen:
        registry.require("compress.runtimes", choice, field="--runtime")
    return name, chosen


def bench(model: Path, *, runtime: str | None, threads: list[int], batch: int, warmup: int, min_runs: int,
          min_seconds: float, input_shapes: dict[str, list[int]], device: str = "cpu", trust: bool = False,
          target: str = "local", timeout_s: float = 600.0) -> list[BenchRow]:
    from compress.targets import prepare, resolve

    _, chosen = runtimes_for(model, runtime, trust)
    runner = resolve(target, field="--target")
    prepare(runner, field="--target")
    plan = latency_plan(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, batch_size=batch)
    rows = []
    for name in chosen:
        for count in threads:
            request = agent_request(model, name, threads=count, latency=plan, device=device,
                                    random_inputs=RandomInputs(shapes=input_shapes, batch=batch, seed=0))
            response = runner.measure(request, timeout_s)
            if response.status == "bad_input":
                raise InputError(response.error or "bad input", file=str(model))
            rows.append(BenchRow(name, count, response))
    return rows


def render(model: Path, rows: list[BenchRow]) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench {model.name}")
    for column in ("runtime", "threads", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "throughput/s", "runs",
                   "status"):
        table.add_column(column, justify="left" if column in ("runtime", "status") else "right")
    for row in rows:
        lat = row.response.latency
        if lat:
            table.add_row(row.runtime, str(row.threads), str(lat.batch_size), f"{lat.p50_ms:.4f}", f"{lat.p90_ms:.4f}",
                          f"{lat.p99_ms:.4f}", f"{lat.mean_ms:.4f}", f"{lat.throughput_per_s:.1f}", str(lat.runs), "ok")
        else:
            table.add_row(row.runtime, str(row.threads), "-", "-", "-", "-", "-", "-", "-",
                          f"{row.response.status}: {row.response.error}")
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(table)
    return console.export_text()
