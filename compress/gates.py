"""Accuracy, size and speed budgets (gates) and baseline comparison, read from results.json.

`evaluate` checks a run against budgets (the recipe's `gates:` section or `compress gate --gates`);
`make_baseline` / `compare` check a run against an earlier one kept in the repository. Both return
`Check`s: one line each, naming the artifact, the metric, the value and the budget. A run that is
incomplete (a measurement crashed or timed out) is never a pass: it yields a failing `complete`
check, and callers exit 3 (`exit_code`).

Budgets compare exact floats: a value exactly at the budget passes, anything over fails, and NaN
or a missing value fails every gate.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compress.budget import AccuracyDrop, Budget, at_least, at_most
from compress.budget import drop as metric_drop
from compress.errors import ExitCode
from compress.results import QUANTIZED, ArtifactRecord, LatencyStats, Measurement, Results

BASELINE_SCHEMA_VERSION = 1
COMPLETE = "complete"
RUN = "run"  # the artifact name of run-level checks
IMPROVED_HINT = "improved beyond tolerance: update the baseline on purpose with `compress baseline`"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GatesConfig(_Strict):
    """Budgets every matching artifact must meet. Unset budgets are not checked."""

    max_accuracy_drop: AccuracyDrop | None = Field(
        None, description="drop of the task metric against the original model: absolute (0.01 = one point "
                          "of top-1) or relative to the original's score ('1%')")
    max_size_mb: float | None = Field(None, gt=0, allow_inf_nan=False, description="artifact file size, 1e6 bytes")
    max_p90_ms: float | None = Field(None, gt=0, allow_inf_nan=False, description="p90 latency per call")
    min_speedup: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="int8 p50 against its fp32 parent on the same runtime, target and threads, in the same run")
    artifacts: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                                 description="fnmatch globs of the artifact names the gates apply to")

    @field_validator("artifacts")
    @classmethod
    def _globs(cls, globs: list[str]) -> list[str]:
        if any(not glob.strip() for glob in globs):
            raise ValueError("artifact globs must not be empty")
        return globs

    @property
    def any_budget(self) -> bool:
        return any(v is not None for v in (self.max_accuracy_drop, self.max_size_mb, self.max_p90_ms,
                                           self.min_speedup))

    def allowed_drop(self, original: float) -> float:
        """The accuracy budget in metric units, given the original model's score."""
        if self.max_accuracy_drop is None:
            return float("nan")
        return Budget.parse(self.max_accuracy_drop).allowed_drop(original)


@dataclass(frozen=True)
class Check:
    """One gate on one artifact (and measurement, where the gate involves a runtime)."""

    gate: str
    artifact: str
    runtime: str | None
    target: str | None
    threads: int | None
    value: float
    limit: float
    passed: bool
    message: str
    # Not compared, with the reason in `message` (a latency ratio measured on another kind of machine):
    # neither a pass nor a failure, and shown as such.
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(checks: Iterable[Check]) -> ExitCode:
    """3 when the run is incomplete (whatever else passed), 1 when a gate failed, else 0."""
    checks = list(checks)
    if any(c.gate == COMPLETE and not c.passed for c in checks):
        return ExitCode.INCOMPLETE
    return ExitCode.FAILED if any(not c.passed for c in checks) else ExitCode.OK


def lower_is_better(results: Results) -> bool:
    """Which way the run's metric runs, as the run recorded it."""
    return bool(results.task.get("lower_is_better", False))


# --- numbers -----------------------------------------------------------------------------------

def format_pair(value: float, limit: float, digits: int = 4) -> tuple[str, str]:
    """Both numbers with `digits` decimals, or more where that would print two different values alike."""
    for places in (digits, 6, 9, 12, 15, 17):
        shown = f"{value:.{places}f}", f"{limit:.{places}f}"
        if shown[0] != shown[1] or value == limit or math.isnan(value) or math.isnan(limit):
            return shown
    return repr(value), repr(limit)


def robust_p50(latency: LatencyStats | None) -> float:
    """The median of the rounds' p50s when there were several rounds, else p50; NaN when not measured."""
    if latency is None:
        return float("nan")
    trials = list(getattr(latency, "trial_p50_ms", None) or [])
    return float(statistics.median(trials)) if len(trials) > 1 else latency.p50_ms


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return float("nan")
    return numerator / denominator


def _where(m: Measurement) -> str:
    return f"{m.artifact} on {m.runtime} ({m.target}, {m.threads}t)"


def _same_place(a: Measurement, b: Measurement) -> bool:
    return a.runtime == b.runtime and a.target == b.target and a.threads == b.threads


# --- completeness ------------------------------------------------------------------------------

def completeness(results: Results) -> list[Check]:
    """A failing `complete` check per crashed or timed-out measurement (one for the run when its status
    says incomplete without one), and a failing `accuracy_budget` check per accuracy-aware int8
    artifact that missed its budget; else a single passing check."""
    checks = [Check(COMPLETE, m.artifact, m.runtime, m.target, m.threads, 0.0, 0.0, False,
                    f"{_where(m)}: measurement {m.status}: {m.error or 'no error recorded'}")
              for m in results.measurements if m.status not in ("ok", "skipped")]
    if not checks and results.status == "incomplete":
        checks.append(Check(COMPLETE, RUN, None, None, None, 0.0, 0.0, False,
                            f"run {results.run_id} is {results.status}: never a pass"))
    checks += [Check("accuracy_budget", b["artifact"], None, None, None, b["validation_metric_int8"],
                     b["validation_metric_fp32"], False, b["message"])
               for b in results.accuracy_budget if not b["met"]]
    if not checks:
        checks.append(Check(COMPLETE, RUN, None, None, None, 1.0, 1.0, True,
                            f"run {results.run_id}: all {len(results.measurements)} measurements finished"))
    return checks


# --- budgets -----------------------------------------------------------------------------------

def _matching(results: Results, globs: list[str]) -> tuple[list[ArtifactRecord], list[Check]]:
    matched = [a for a in results.artifacts if any(fnmatch.fnmatchcase(a.name, g) for g in globs)]
    names = ", ".join(a.name for a in results.artifacts)
    unmatched = [Check("artifacts", glob, None, None, None, 0.0, 1.0, False,
                       f"gates.artifacts: {glob!r} matches no artifact of this run ({names})")
                 for glob in globs if not any(fnmatch.fnmatchcase(a.name, glob) for a in results.artifacts)]
    return matched, unmatched


def _ok_measurements(results: Results, artifact: str) -> list[Measurement]:
    return [m for m in results.measurements if m.artifact == artifact and m.status == "ok"]


def original_measurement(results: Results) -> Measurement | None:
    """What accuracy drops are measured from: `original` on torch, else its first measurement, else
    (torch not among the runtimes) the original's first fp32 export that was measured."""
    candidates = _ok_measurements(results, "original")
    if not candidates:
        exports = [a.name for a in results.artifacts
                   if a.precision == "fp32" and len(a.lineage) == 2 and a.lineage[0] == "original"]
        candidates = [m for name in exports for m in _ok_measurements(results, name)]
    return next((m for m in candidates if m.runtime == "torch"), candidates[0] if candidates else None)


def _metric(m: Measurement | None, metric: str) -> float:
    return float("nan") if m is None else m.metric.get(metric, float("nan"))


def _accuracy_checks(results: Results, gates: GatesConfig, artifacts: list[ArtifactRecord]) -> list[Check]:
    metric = str(results.task.get("metric", "metric"))
    reference = original_measurement(results)
    original = _metric(reference, metric)
    limit = gates.allowed_drop(original)
    budget = f"{gates.max_accuracy_drop} of original" if isinstance(gates.max_accuracy_drop, str) else ""
    checks = []
    for artifact in artifacts:
        if artifact.name == "original":
            continue
        for m in _ok_measurements(results, artifact.name):
            now = _metric(m, metric)
            drop = metric_drop(original, now, lower_is_better(results))
            passed = at_most(drop, limit)
            shown_drop, shown_limit = format_pair(drop, limit)
            if reference is None:
                why = f"{metric} of the original model was not measured"
            elif math.isnan(now) or math.isnan(original):
                why = f"{metric} is missing or NaN"
            else:
                why = ""
            sign = "<=" if passed else ">"
            text = (f"{_where(m)}: {metric} drop {shown_drop} {sign} budget {shown_limit}"
                    f"{f' ({budget})' if budget else ''} (original {original:.4f}, now {now:.4f})")
            checks.append(Check("max_accuracy_drop", m.artifact, m.runtime, m.target, m.threads, drop, limit,
                                passed, f"{text}: {why}" if why else text))
    return checks


def _size_checks(limit: float, artifacts: list[ArtifactRecord]) -> list[Check]:
    checks = []
    for artifact in artifacts:
        size = artifact.size_bytes / 1e6
        passed = at_most(size, limit)
        shown, shown_limit = format_pair(size, limit)
        checks.append(Check("max_size_mb", artifact.name, None, None, None, size, limit, passed,
                            f"{artifact.name}: size {shown} MB {'<=' if passed else '>'} budget {shown_limit} MB"))
    return checks


def _p90_checks(results: Results, limit: float, artifacts: list[ArtifactRecord]) -> list[Check]:
    checks = []
    for artifact in artifacts:
        for m in _ok_measurements(results, artifact.name):
            p90 = m.latency.p90_ms if m.latency is not None else float("nan")
            passed = at_most(p90, limit)
            shown, shown_limit = format_pair(p90, limit)
            missing = ": latency was not measured" if m.latency is None else ""
            checks.append(Check("max_p90_ms", m.artifact, m.runtime, m.target, m.threads, p90, limit, passed,
                                f"{_where(m)}: p90 {shown} ms {'<=' if passed else '>'} budget {shown_limit} ms"
                                + missing))
    return checks


def _speedup_checks(results: Results, limit: float, artifacts: list[ArtifactRecord]) -> list[Check]:
    checks = []
    by_id = {a.id: a for a in results.artifacts}
    for artifact in artifacts:
        parent = by_id.get(artifact.parent) if artifact.parent else None
        if artifact.precision not in QUANTIZED or parent is None:
            continue
        for m in _ok_measurements(results, artifact.name):
            fp32 = next((p for p in results.measurements if p.artifact == parent.name and _same_place(p, m)), None)
            if fp32 is None:
                continue  # the parent does not run here: nothing to compare with
            parent_p50 = robust_p50(fp32.latency) if fp32.status == "ok" else float("nan")
            speedup = _ratio(parent_p50, robust_p50(m.latency))
            passed = at_least(speedup, limit)
            shown, shown_limit = format_pair(speedup, limit, digits=3)
            text = (f"{_where(m)}: speedup {shown}x vs {parent.name} {'>=' if passed else '<'} budget "
                    f"{shown_limit}x (p50 {parent_p50:.4f} ms -> {robust_p50(m.latency):.4f} ms)")
            if math.isnan(speedup):
                text += ": latency missing or NaN"
            checks.append(Check("min_speedup", m.artifact, m.runtime, m.target, m.threads, speedup, limit,
                                passed, text))
    return checks


def evaluate(results: Results, gates: GatesConfig) -> list[Check]:
    """Completeness first, then one check per budget per matching artifact (per measurement where the
    budget involves a runtime)."""
    checks = completeness(results)
    artifacts, unmatched = _matching(results, gates.artifacts)
    checks.extend(unmatched)
    if gates.max_accuracy_drop is not None:
        checks.extend(_accuracy_checks(results, gates, artifacts))
    if gates.max_size_mb is not None:
        checks.extend(_size_checks(gates.max_size_mb, artifacts))
    if gates.max_p90_ms is not None:
        checks.extend(_p90_checks(results, gates.max_p90_ms, artifacts))
    if gates.min_speedup is not None:
        checks.extend(_speedup_checks(results, gates.min_speedup, artifacts))
    return checks


# --- baselines ---------------------------------------------------------------------------------

class Tolerances(_Strict):
    """How far a run may move from its baseline, either way, before the gate fails."""

    metric: float = Field(0.005, ge=0, allow_inf_nan=False, description="absolute, in metric units")
    size: float = Field(0.02, ge=0, allow_inf_nan=False, description="relative change of size_bytes")
    latency_ratio: float = Field(0.15, ge=0, allow_inf_nan=False,
                                 description="relative change of p50 / the reference's p50 in the same run")


class BaselineEntry(_Strict):
    artifact: str
    runtime: str
    target: str
    threads: int
    metric: dict[str, float]
    size_bytes: int
    reference: str | None = Field(description="the artifact whose p50 (same runtime, target, threads) divides")
    latency_ratio: float | None
    p50_ms: float | None = Field(description="for information: raw p50 depends on the machine")
    machine: str | None = Field(None, description="where the latency ratio was measured (see machine_class): "
                                                  "ratios are compared only on the same kind of machine")


class Baseline(_Strict):
    schema_version: Literal[1] = BASELINE_SCHEMA_VERSION
    created: str
    recipe_name: str
    compress_version: str
    run_id: str
    metric: str
    entries: list[BaselineEntry]


def _reference(results: Results, m: Measurement) -> Measurement | None:
    """The latency reference of `m` in the same run (same runtime, target, threads): `original` if it ran
    there, else the fp32 artifact closest to the original (shortest lineage, e.g. original.onnx), which
    the compression steps do not change; the fp32 parent is one of those candidates."""
    here = [p for p in results.measurements if p.status == "ok" and _same_place(p, m) and p.latency is not None]
    original = next((p for p in here if p.artifact == "original"), None)
    if original is not None:
        return original
    records = {a.name: (index, a) for index, a in enumerate(results.artifacts)}
    fp32 = [p for p in here if p.artifact in records and records[p.artifact][1].precision == "fp32"]
    return min(fp32, key=lambda p: (len(records[p.artifact][1].lineage), records[p.artifact][0]), default=None)


def machine_class(device: dict[str, Any]) -> str | None:
    """What an int8 / fp32 latency ratio depends on beyond the model: the GPU, or the CPU model with
    its vector and int8 dot-product instruction sets (the quickstart's int8 ran at 0.31x of fp32 on a
    CPU with AVX-512 VNNI and at 0.58x on another CPU type, the same code). None when not recorded."""
    gpu = device.get("gpu")
    if isinstance(gpu, dict) and gpu.get("name"):
        return f"GPU {gpu['name']}"
    if not device.get("cpu"):
        return None
    isa = [*device.get("vector_isa", []), *device.get("int8_dot_product", [])]
    return f"{device['cpu']} [{' '.join(isa) or 'no vector extensions recorded'}]"


def make_baseline(results: Results, artifacts: list[str] | None = None) -> dict[str, Any]:
    """What `compress baseline` writes: per measurement (of the artifacts matching the `artifacts`
    globs, all by default), its metrics, size and latency as a ratio to a reference measured in the
    same run (so a slower machine does not move it), with the kind of machine that ratio is from."""
    entries = []
    sizes = {a.name: a.size_bytes for a in results.artifacts}
    for m in results.measurements:
        if m.status != "ok" or m.artifact not in sizes:
            continue
        if artifacts is not None and not any(fnmatch.fnmatchcase(m.artifact, glob) for glob in artifacts):
            continue
        reference = _reference(results, m)
        ratio = _ratio(robust_p50(m.latency), robust_p50(reference.latency)) if reference else float("nan")
        entries.append(BaselineEntry(
            artifact=m.artifact, runtime=m.runtime, target=m.target, threads=m.threads, metric=dict(m.metric),
            size_bytes=sizes[m.artifact],
            reference=reference.artifact if reference else None,
            latency_ratio=None if math.isnan(ratio) else ratio,
            p50_ms=None if m.latency is None else robust_p50(m.latency),
            machine=machine_class(m.device) if reference else None))
    baseline = Baseline(created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                        recipe_name=results.recipe_name, compress_version=results.compress_version,
                        run_id=results.run_id, metric=str(results.task.get("metric", "metric")), entries=entries)
    return baseline.model_dump()  # plain JSON types; a NaN metric stays NaN (json.dumps writes it)


Location = tuple[str, str | None, str | None, int | None]


def _describe(loc: Location) -> str:
    artifact, runtime, target, threads = loc
    return artifact if runtime is None else f"{artifact} on {runtime} ({target}, {threads}t)"


def _drift(gate: str, loc: Location, what: str, new: float, old: float, change: float, tolerance: float,
           *, higher_is_better: bool, unit: str = "") -> Check:
    """A check that `change` stays within ±tolerance; beyond it either way fails."""
    passed = at_most(abs(change), tolerance)
    shown, shown_tol = format_pair(abs(change), tolerance)
    shown = shown if math.isnan(change) else ("-" if change < 0 else "+") + shown
    text = f"{_describe(loc)}: {what} {new:.4f}{unit} vs baseline {old:.4f}{unit}: change {shown}"
    if passed:
        text += f" within tolerance {shown_tol}"
    elif math.isnan(change):
        text += f", not within tolerance {shown_tol}: value missing or NaN"
    elif (change > 0) == higher_is_better:
        text += f" beyond tolerance {shown_tol}: {IMPROVED_HINT}"
    else:
        text += f" beyond tolerance {shown_tol} (worse)"
    return Check(gate, *loc, change, tolerance, passed, text)


def _entry_checks(results: Results, entry: BaselineEntry, found: Measurement, tolerances: Tolerances) -> list[Check]:
    loc = (found.artifact, found.runtime, found.target, found.threads)
    checks = []
    for name, old in entry.metric.items():
        new = found.metric.get(name, float("nan"))
        checks.append(_drift("baseline.metric", loc, name, new, old, new - old, tolerances.metric,
                             higher_is_better=not lower_is_better(results)))
    here = machine_class(found.device)
    if entry.latency_ratio is not None and entry.machine is not None and here != entry.machine:
        checks.append(Check("baseline.latency_ratio", *loc, float("nan"), tolerances.latency_ratio, True,
                            f"{_describe(loc)}: latency ratio not compared: the baseline's is from "
                            f"{entry.machine}, this run is on {here or 'a machine it did not record'} "
                            "(record a baseline for this machine with `compress baseline`)", skipped=True))
    elif entry.latency_ratio is not None:
        reference = next((p for p in results.measurements if p.artifact == entry.reference and p.status == "ok"
                          and _same_place(p, found)), None)
        new_ratio = _ratio(robust_p50(found.latency), robust_p50(reference.latency if reference else None))
        change = _ratio(new_ratio - entry.latency_ratio, entry.latency_ratio)
        checks.append(_drift("baseline.latency_ratio", loc, f"p50 / {entry.reference} p50", new_ratio,
                             entry.latency_ratio, change, tolerances.latency_ratio, higher_is_better=False, unit="x"))
    return checks


def _size_bytes(results: Results, artifact: str) -> float:
    record = next((a for a in results.artifacts if a.name == artifact), None)
    return float("nan") if record is None else float(record.size_bytes)


def compare(results: Results, baseline: Baseline | dict[str, Any], tolerances: Tolerances | None = None
            ) -> list[Check]:
    """Each baseline entry against the same artifact, runtime, target and threads in `results`. Beyond
    tolerance fails either way (an improvement too: baselines change on purpose); a missing entry fails."""
    baseline = baseline if isinstance(baseline, Baseline) else Baseline.model_validate(baseline)
    tolerances = tolerances or Tolerances()
    checks: list[Check] = []
    sized: set[str] = set()
    for entry in baseline.entries:
        found = next((m for m in results.measurements if m.artifact == entry.artifact and m.runtime == entry.runtime
                      and m.target == entry.target and m.threads == entry.threads), None)
        where = f"{entry.artifact} on {entry.runtime} ({entry.target}, {entry.threads}t)"
        if found is None or found.status != "ok":
            status = "not measured" if found is None else f"measurement {found.status}"
            checks.append(Check("baseline.present", entry.artifact, entry.runtime, entry.target, entry.threads,
                                float("nan"), 0.0, False, f"{where}: in the baseline but {status} in this run"))
            continue
        checks.extend(_entry_checks(results, entry, found, tolerances))
        if entry.artifact not in sized:
            sized.add(entry.artifact)
            new_size = _size_bytes(results, entry.artifact)
            change = _ratio(new_size - entry.size_bytes, entry.size_bytes)
            checks.append(_drift("baseline.size", (entry.artifact, None, None, None), "size", new_size / 1e6,
                                 entry.size_bytes / 1e6, change, tolerances.size, higher_is_better=False,
                                 unit=" MB"))
    return checks
