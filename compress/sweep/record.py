"""sweep.json: every trial (planned, running, finished or failed), its point and the Pareto set.

A trial's point is one artifact of its run measured on one target: the task metric, its drop from
the original model (measured on torch in the same run), latency and size. The Pareto set is over
all finished trials and is kept whether or not any meets the constraints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.pareto import pareto_front
from compress.results import QUANTIZED

if TYPE_CHECKING:
    from compress.results import Results
    from compress.sweep_config import Constraints, Objectives

SWEEP_SCHEMA_VERSION = 1


def point_artifact(results: Results, objectives: Objectives, first_format: str | None) -> str | None:
    """The artifact that stands for the trial."""
    names = [a.name for a in results.artifacts]
    if objectives.artifact is not None:
        wanted = objectives.artifact.replace("{format}", first_format or "")
        return wanted if wanted in names else None
    quantized = [a for a in results.artifacts if a.precision in QUANTIZED]
    if quantized:
        return quantized[0].name
    torch_chain = [a for a in results.artifacts if a.format == "torch"]
    if not torch_chain:
        return None
    last = torch_chain[-1]
    exported = [a for a in results.artifacts if a.parent == last.id and a.format != "torch"]
    return (exported[0] if exported else last).name


def trial_point(results: Results, objectives: Objectives, first_format: str | None) -> dict[str, Any]:
    """The trial's objectives, or the reason it has none."""
    metric_name = results.task.get("metric", "metric")
    lower = bool(results.task.get("lower_is_better", False))
    name = point_artifact(results, objectives, first_format)
    if name is None:
        return {"error": f"no artifact {objectives.artifact or '(the final one)'} in the run"}
    want = objectives.latency
    chosen = [m for m in results.measurements if m.artifact == name and m.status == "ok"
              and (want.target is None or m.target == want.target)
              and (want.runtime is None or m.runtime == want.runtime)
              and (want.threads is None or m.threads == want.threads)]
    if not chosen:
        return {"artifact": name, "error": f"{name} has no finished measurement on the objectives' target"}
    m = chosen[0]
    artifact = results.artifact(name)
    value = m.metric.get(metric_name)
    torch_chain = [a for a in results.artifacts if a.format == "torch"]
    original = next((o for o in results.measurements if torch_chain and o.artifact == torch_chain[0].name
                     and o.runtime == "torch" and o.status == "ok" and metric_name in o.metric), None)
    drop = None
    if value is not None and original is not None:
        base = original.metric[metric_name]
        drop = (value - base) if lower else (base - value)
    latency = getattr(m.latency, f"{want.percentile}_ms") if m.latency else None
    return {"artifact": name, "runtime": m.runtime, "target": m.target, "threads": m.threads, "metric": value,
            "metric_original": original.metric[metric_name] if original else None, "drop": drop,
            "latency_ms": latency, "size_mb": artifact.size_bytes / 1e6,
            "parity_passed": None if m.parity is None else m.parity.passed}


def violations(point: dict[str, Any], constraints: Constraints) -> list[str]:
    """Why a finished trial does not meet the constraints (empty: it does). A constraint whose figure
    is missing is not met."""
    out = []
    checks = (("max_accuracy_drop", "drop", "accuracy drop"), ("max_latency_ms", "latency_ms", "latency ms"),
              ("max_size_mb", "size_mb", "size MB"))
    for field, key, label in checks:
        limit = getattr(constraints, field)
        if limit is None:
            continue
        value = point.get(key)
        if value is None or not math.isfinite(value):
            out.append(f"{label} unknown")
        elif value > limit:
            out.append(f"{label} {value:.4g} > {limit:g}")
    if point.get("parity_passed") is False:
        out.append("parity failed")
    return out


def objective_values(point: dict[str, Any], lower_is_better: bool) -> tuple[float, float, float] | None:
    """(metric, latency, size), all to minimize; None when one is missing."""
    values = (point.get("metric"), point.get("latency_ms"), point.get("size_mb"))
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    metric, latency, size = values
    return (metric if lower_is_better else -metric, latency, size)  # type: ignore[operator,return-value]


def refresh_pareto(record: dict[str, Any]) -> None:
    """The Pareto set over every finished trial, and the part of it that meets the constraints."""
    lower = record["objectives"]["lower_is_better"]
    finished = [(t, objective_values(t.get("objectives") or {}, lower)) for t in record["trials"]
                if t["status"] == "ok"]
    scored = [(t, v) for t, v in finished if v is not None]
    front = pareto_front([v for _, v in scored])
    record["pareto"] = [scored[i][0]["id"] for i in front]
    feasible = [(t, v) for t, v in scored if t.get("feasible")]
    record["pareto_feasible"] = [feasible[i][0]["id"] for i in pareto_front([v for _, v in feasible])]


def write(folder: Path, record: dict[str, Any]) -> None:
    from compress.runtimes.files import write_atomic

    write_atomic(folder / "sweep.json", json.dumps(record, indent=1, default=str))


def read(folder: Path) -> dict[str, Any]:
    from compress.errors import InputError

    path = folder / "sweep.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the sweep record: {type(exc).__name__}: {exc}", file=str(path)) from None
    if not isinstance(record, dict) or record.get("schema_version") != SWEEP_SCHEMA_VERSION \
            or not isinstance(record.get("trials"), list):
        raise InputError(f"not a sweep record of schema_version {SWEEP_SCHEMA_VERSION}", file=str(path))
    for index, trial in enumerate(record["trials"]):
        if not (isinstance(trial, dict) and type(trial.get("id")) is int and isinstance(trial.get("parameters"), dict)
                and trial.get("status") in ("pending", "running", "ok", "failed")):
            raise InputError(f"trials[{index}] is not a trial record (id, parameters, status)", file=str(path))
    return record
