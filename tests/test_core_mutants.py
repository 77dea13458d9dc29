"""The exact behaviour of the core checks, pinned where a mutation check (benchmarks/mutation_score.py,
docs/mutation.md) found that a changed operator, constant or message went unnoticed: the gates'
messages and boundaries, the fallbacks for a missing reference, baselines of odd runs, cosines and
agreement with non-finite rows, dead outputs, perplexity of far-apart logits, and parity at its
thresholds. Expected values are worked out by hand or with plain numpy, not with the code under test."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from compress import metrics, tasks
from compress.gates import (
    IMPROVED_HINT,
    Check,
    GatesConfig,
    compare,
    evaluate,
    format_pair,
    lower_is_better,
    machine_class,
    make_baseline,
    original_measurement,
    robust_p50,
)
from compress.recipe import ParityThresholds
from compress.results import Results
from compress.runtimes.protocol import LatencyStats
from compress.verify import parity

NAN = float("nan")
INT8 = "original.int8.onnx"
RUN_ID = "20260102-000000-mutants"
WHERE = f"{INT8} on onnxruntime (local, 1t)"
CPU = {"cpu": "Xeon", "vector_isa": ["avx2"], "int8_dot_product": []}


# --- a small run: the original, its fp32 ONNX export and that export's int8 ------------------------

def latency(p50: float, p90: float | None = None, trials: list[float] | None = None) -> dict[str, Any]:
    p90 = p50 * 1.25 if p90 is None else p90
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p90, "mean_ms": p50, "min_ms": p50, "max_ms": p90, "runs": 10,
            "seconds": 0.01, "throughput_per_s": 1000.0, "batch_size": 1, "threads": 1, "warmup": 0,
            "trial_p50_ms": trials or []}


def artifact(name: str, fmt: str, precision: str, size: int, parent: str | None, lineage: list[str]) -> dict:
    return {"name": name, "id": f"id-{name}", "format": fmt, "precision": precision, "path": f"artifacts/{name}",
            "sha256": "0" * 64, "size_bytes": size, "lineage": lineage,
            "parent": f"id-{parent}" if parent else None}


def measured(name: str, runtime: str, score: float | None, p50: float | None, *, threads: int = 1,
             status: str = "ok", metric: str = "top1") -> dict:
    return {"artifact": name, "runtime": runtime, "target": "local", "threads": threads, "status": status,
            "metric": {} if score is None else {metric: score}, "latency": None if p50 is None else latency(p50)}


def run() -> dict[str, Any]:
    """Scores and times that are exact in binary floating point."""
    return {
        "compress_version": "0.1.0", "run_id": RUN_ID, "recipe": "/r.yaml", "recipe_name": "mutants",
        "started": "2026-01-02T00:00:00+00:00", "finished": "2026-01-02T00:01:00+00:00", "status": "complete",
        "task": {"kind": "classification", "metric": "top1"}, "data": {}, "stages": [], "versions": {},
        "artifacts": [
            artifact("original", "torch", "fp32", 500_000, None, ["original"]),
            artifact("original.onnx", "onnx", "fp32", 500_000, "original", ["original", "export.onnx"]),
            artifact(INT8, "onnx", "int8", 125_000, "original.onnx",
                     ["original", "export.onnx", "quantize.onnxruntime"]),
        ],
        "measurements": [
            measured("original", "torch", 0.75, 4.0),
            measured("original.onnx", "onnxruntime", 0.75, 1.0),
            measured(INT8, "onnxruntime", 0.5, 0.25),
        ],
    }


def build(data: dict[str, Any]) -> Results:
    return Results.model_validate(data)


def of(data: dict[str, Any], name: str, runtime: str | None = None) -> dict[str, Any]:
    return next(m for m in data["measurements"] if m["artifact"] == name and runtime in (None, m["runtime"]))


def gate(checks: list[Check], name: str) -> list[Check]:
    return [c for c in checks if c.gate == name]


# --- numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "limit", "shown"), [
    (0.25, 0.25, ("0.2500", "0.2500")),  # equal: the default places, never repr
    (0.25, 0.5, ("0.2500", "0.5000")),
    (0.1234567, 0.1234568, ("0.123456700", "0.123456800")),  # alike at 4 and 6 places: 9
    (0.1 + 1e-14, 0.1, ("0.100000000000010", "0.100000000000000")),  # alike at 9 and 12: 15
    (math.nextafter(0.1, 1.0), 0.1, ("0.10000000000000002", "0.10000000000000001")),  # alike at 15: 17
    (1e-20, 2e-20, ("1e-20", "2e-20")),  # alike at every number of places: repr
    (NAN, NAN, ("nan", "nan")),
    (NAN, 0.25, ("nan", "0.2500")),
])
def test_format_pair_shows_the_fewest_places_that_tell_the_numbers_apart(value, limit, shown):
    assert format_pair(value, limit) == shown


def test_format_pair_digits():
    assert format_pair(2.0, 2.0, digits=3) == ("2.000", "2.000")
    assert format_pair(2.0, 2.0625, digits=3) == ("2.000", "2.062")


def test_robust_p50_takes_the_median_of_two_or_more_rounds_else_the_p50():
    assert math.isnan(robust_p50(None))
    assert robust_p50(LatencyStats(**latency(5.0))) == 5.0
    assert robust_p50(LatencyStats(**latency(5.0, trials=[3.0]))) == 5.0  # one round: its pooled p50
    assert robust_p50(LatencyStats(**latency(5.0, trials=[1.0, 3.0]))) == 2.0
    assert robust_p50(LatencyStats(**latency(5.0, trials=[1.0, 9.0, 3.0]))) == 3.0


def test_no_accuracy_budget_allows_nothing_measurable():
    assert math.isnan(GatesConfig().allowed_drop(0.5))
    assert GatesConfig(max_accuracy_drop=0.125).allowed_drop(0.5) == 0.125


def test_the_direction_of_the_metric_is_what_the_run_recorded():
    data = run()
    assert lower_is_better(build(data)) is False
    data["task"]["lower_is_better"] = True
    assert lower_is_better(build(data)) is True


# --- completeness ------------------------------------------------------------------------------

def test_a_failed_measurement_without_an_error_is_one_exact_check():
    data = run()
    of(data, INT8).update(status="failed", error=None, latency=None)
    assert evaluate(build(data), GatesConfig()) == [
        Check("complete", INT8, "onnxruntime", "local", 1, 0.0, 0.0, False,
              f"{WHERE}: measurement failed: no error recorded")]


def test_a_skipped_measurement_is_not_a_crash():
    data = run()
    of(data, INT8).update(status="skipped", latency=None)
    assert evaluate(build(data), GatesConfig()) == [
        Check("complete", "run", None, None, None, 1.0, 1.0, True, f"run {RUN_ID}: all 3 measurements finished")]


def test_an_incomplete_status_alone_is_one_exact_run_level_check():
    data = run()
    data["status"] = "incomplete"
    assert evaluate(build(data), GatesConfig()) == [
        Check("complete", "run", None, None, None, 0.0, 0.0, False, f"run {RUN_ID} is incomplete: never a pass")]


def test_a_missed_accuracy_budget_is_a_failing_check_and_a_met_one_is_not():
    data = run()
    data["accuracy_budget"] = [
        {"artifact": INT8, "format": "onnx", "validation_metric_int8": 0.5, "validation_metric_fp32": 0.75,
         "met": False, "message": "int8 0.5000 vs fp32 0.7500 on validation"},
        {"artifact": "other.int8.onnx", "format": "onnx", "validation_metric_int8": 0.75,
         "validation_metric_fp32": 0.75, "met": True, "message": "met"},
    ]
    assert evaluate(build(data), GatesConfig()) == [
        Check("accuracy_budget", INT8, None, None, None, 0.5, 0.75, False, "int8 0.5000 vs fp32 0.7500 on validation")]


def test_a_check_as_a_dict_for_results_json():
    check = Check("max_size_mb", INT8, None, None, None, 0.125, 0.25, True, "ok")
    assert check.as_dict() == {"gate": "max_size_mb", "artifact": INT8, "runtime": None, "target": None,
                               "threads": None, "value": 0.125, "limit": 0.25, "passed": True, "message": "ok",
                               "skipped": False}


def test_a_glob_that_matches_nothing_is_one_exact_check():
    checks = evaluate(build(run()), GatesConfig(max_size_mb=10, artifacts=["*.tflite"]))
    assert gate(checks, "artifacts") == [
        Check("artifacts", "*.tflite", None, None, None, 0.0, 1.0, False,
              f"gates.artifacts: '*.tflite' matches no artifact of this run (original, original.onnx, {INT8})")]


# --- the accuracy reference --------------------------------------------------------------------

def _exports_only() -> dict[str, Any]:
    """The original is not measured; an fp32 distilled export, an int8 of the original and the
    original's fp32 exports are (in that order of artifacts)."""
    data = run()
    data["artifacts"] = [
        artifact("original", "torch", "fp32", 500_000, None, ["original"]),
        artifact("distill.onnx", "onnx", "fp32", 250_000, "original", ["original", "distill", "export.onnx"]),
        artifact("original.q.onnx", "onnx", "int8", 125_000, "original", ["original", "quantize.onnx"]),
        artifact("original.onnx", "onnx", "fp32", 500_000, "original", ["original", "export.onnx"]),
        artifact("original.pt", "torch", "fp32", 500_000, "original", ["original", "export.torch"]),
    ]
    data["measurements"] = [
        measured("distill.onnx", "onnxruntime", 0.125, 1.0),
        measured("original.q.onnx", "onnxruntime", 0.25, 1.0),
        measured("original.onnx", "onnxruntime", 0.375, 1.0),
        measured("original.pt", "torch", 0.5, 1.0),
    ]
    return data


def test_without_the_original_its_fp32_export_on_torch_is_the_reference():
    reference = original_measurement(build(_exports_only()))
    assert reference is not None and (reference.artifact, reference.runtime) == ("original.pt", "torch")


def test_without_the_original_or_torch_its_first_fp32_export_is_the_reference():
    data = _exports_only()
    data["measurements"] = data["measurements"][:3]
    reference = original_measurement(build(data))
    assert reference is not None and (reference.artifact, reference.runtime) == ("original.onnx", "onnxruntime")


def test_without_any_measurement_of_the_original_there_is_no_reference():
    data = _exports_only()
    data["measurements"] = data["measurements"][:2]
    assert original_measurement(build(data)) is None


# --- budgets: exact messages and boundaries ----------------------------------------------------

def test_an_accuracy_drop_at_an_absolute_budget_passes_with_an_exact_message():
    checks = evaluate(build(run()), GatesConfig(max_accuracy_drop=0.25, artifacts=[INT8]))
    assert gate(checks, "max_accuracy_drop") == [
        Check("max_accuracy_drop", INT8, "onnxruntime", "local", 1, 0.25, 0.25, True,
              f"{WHERE}: top1 drop 0.2500 <= budget 0.2500 (original 0.7500, now 0.5000)")]


def test_a_missing_score_says_so():
    data = run()
    of(data, INT8)["metric"] = {}
    (check,) = gate(evaluate(build(data), GatesConfig(max_accuracy_drop=0.25, artifacts=[INT8])), "max_accuracy_drop")
    assert not check.passed and math.isnan(check.value) and check.limit == 0.25
    assert check.message == (f"{WHERE}: top1 drop nan > budget 0.2500 (original 0.7500, now nan): "
                             "top1 is missing or NaN")


def test_an_unmeasured_original_says_so():
    data = run()
    data["measurements"] = [of(data, INT8)]
    (check,) = gate(evaluate(build(data), GatesConfig(max_accuracy_drop=0.25)), "max_accuracy_drop")
    assert not check.passed and math.isnan(check.value)
    assert check.message == (f"{WHERE}: top1 drop nan > budget 0.2500 (original nan, now 0.5000): "
                             "top1 of the original model was not measured")


def test_a_run_that_names_no_metric_reads_the_metric_called_metric():
    data = run()
    data["task"] = {"kind": "classification"}
    for m in data["measurements"]:
        m["metric"] = {"metric": m["metric"]["top1"]}
    (check,) = gate(evaluate(build(data), GatesConfig(max_accuracy_drop=0.25, artifacts=[INT8])), "max_accuracy_drop")
    assert check.passed and check.message.startswith(f"{WHERE}: metric drop 0.2500 <= budget 0.2500")
    assert make_baseline(build(data))["metric"] == "metric"
    assert make_baseline(build(run()))["metric"] == "top1"


def _perplexity_run(original: float, now: float) -> dict[str, Any]:
    data = run()
    data["task"] = {"kind": "language_model", "metric": "perplexity", "lower_is_better": True}
    for m in data["measurements"]:
        m["metric"] = {"perplexity": now if m["artifact"] == INT8 else original}
    return data


def test_for_a_lower_is_better_metric_a_rise_is_the_drop():
    gates = GatesConfig(max_accuracy_drop=2.0, artifacts=[INT8])
    (at,) = gate(evaluate(build(_perplexity_run(8.0, 10.0)), gates), "max_accuracy_drop")
    assert at.passed and at.value == 2.0
    assert at.message == f"{WHERE}: perplexity drop 2.0000 <= budget 2.0000 (original 8.0000, now 10.0000)"
    (over,) = gate(evaluate(build(_perplexity_run(8.0, 10.0)), GatesConfig(max_accuracy_drop=1.5, artifacts=[INT8])),
                   "max_accuracy_drop")
    assert not over.passed and over.value == 2.0
    (better,) = gate(evaluate(build(_perplexity_run(8.0, 6.0)), GatesConfig(max_accuracy_drop=0.0, artifacts=[INT8])),
                     "max_accuracy_drop")
    assert better.passed and better.value == -2.0  # a fall in perplexity is no drop at all
    relative_budget = GatesConfig(max_accuracy_drop="25%", artifacts=[INT8])
    (relative,) = gate(evaluate(build(_perplexity_run(8.0, 10.0)), relative_budget), "max_accuracy_drop")
    assert relative.passed and relative.limit == 2.0 and "(25% of original)" in relative.message


def test_size_and_p90_at_their_budgets_pass_with_exact_checks():
    checks = evaluate(build(run()), GatesConfig(max_size_mb=0.125, max_p90_ms=0.3125, artifacts=[INT8]))
    assert gate(checks, "max_size_mb") == [
        Check("max_size_mb", INT8, None, None, None, 0.125, 0.125, True, f"{INT8}: size 0.1250 MB <= budget 0.1250 MB")]
    assert gate(checks, "max_p90_ms") == [
        Check("max_p90_ms", INT8, "onnxruntime", "local", 1, 0.3125, 0.3125, True,
              f"{WHERE}: p90 0.3125 ms <= budget 0.3125 ms")]


def test_p90_not_measured_has_an_exact_message():
    data = run()
    of(data, INT8)["latency"] = None
    (check,) = gate(evaluate(build(data), GatesConfig(max_p90_ms=0.3125, artifacts=[INT8])), "max_p90_ms")
    assert not check.passed and check.message == f"{WHERE}: p90 nan ms > budget 0.3125 ms: latency was not measured"


def test_a_speedup_at_its_budget_passes_with_an_exact_check():
    checks = evaluate(build(run()), GatesConfig(min_speedup=4.0))
    assert gate(checks, "min_speedup") == [
        Check("min_speedup", INT8, "onnxruntime", "local", 1, 4.0, 4.0, True,
              f"{WHERE}: speedup 4.000x vs original.onnx >= budget 4.000x (p50 1.0000 ms -> 0.2500 ms)")]


def test_a_zero_p50_is_no_speedup():
    data = run()
    of(data, INT8)["latency"] = latency(0.0)
    (check,) = gate(evaluate(build(data), GatesConfig(min_speedup=4.0)), "min_speedup")
    assert not check.passed and math.isnan(check.value)
    assert check.message == (f"{WHERE}: speedup nanx vs original.onnx < budget 4.000x "
                             "(p50 1.0000 ms -> 0.0000 ms): latency missing or NaN")


def test_the_p50_of_a_failed_parent_is_not_used():
    data = run()
    of(data, "original.onnx").update(status="failed", error="agent crashed")  # its latency record is kept
    (check,) = gate(evaluate(build(data), GatesConfig(min_speedup=4.0)), "min_speedup")
    assert not check.passed and math.isnan(check.value)
    assert check.message == (f"{WHERE}: speedup nanx vs original.onnx < budget 4.000x "
                             "(p50 nan ms -> 0.2500 ms): latency missing or NaN")


def test_a_measurement_without_its_parent_alongside_does_not_stop_the_next():
    data = run()
    data["measurements"].insert(2, measured(INT8, "onnxruntime", 0.5, 0.125, threads=2))  # no parent at 2 threads
    checks = gate(evaluate(build(data), GatesConfig(min_speedup=4.0)), "min_speedup")
    assert [(c.artifact, c.threads, c.value) for c in checks] == [(INT8, 1, 4.0)]


def test_machine_class_without_instruction_sets():
    assert machine_class({"cpu": "Xeon"}) == "Xeon [no vector extensions recorded]"
    assert machine_class({"cpu": "Xeon", "vector_isa": ["avx2"]}) == "Xeon [avx2]"
    assert machine_class({"cpu": "Xeon", "int8_dot_product": ["amx_int8"]}) == "Xeon [amx_int8]"


# --- baselines ---------------------------------------------------------------------------------

def _many_fp32() -> dict[str, Any]:
    """No fp32 export of the original measured on onnxruntime; two fp32 exports of the same depth; an
    int8 earlier in the list of artifacts than both; a failed measurement first; an int8 alone on
    openvino; a measurement without latency."""
    data = run()
    data["artifacts"] = [
        artifact("original", "torch", "fp32", 500_000, None, ["original"]),
        artifact("original.onnx", "onnx", "fp32", 500_000, "original", ["original", "export.onnx"]),
        artifact(INT8, "onnx", "int8", 125_000, "original.onnx", ["original", "export.onnx", "quantize.onnxruntime"]),
        artifact("distill.onnx", "onnx", "fp32", 250_000, "original", ["original", "distill", "export.onnx"]),
        artifact("prune.onnx", "onnx", "fp32", 250_000, "original", ["original", "prune", "export.onnx"]),
        artifact("original.int8.xml", "openvino", "int8", 125_000, "original", ["original", "quantize.openvino"]),
    ]
    data["measurements"] = [
        measured("original.onnx", "onnxruntime", None, None, status="failed"),
        measured("original", "torch", 0.75, 4.0),
        measured(INT8, "onnxruntime", 0.5, 0.25),
        measured("prune.onnx", "onnxruntime", 0.75, 2.0),
        measured("distill.onnx", "onnxruntime", 0.75, 1.0),
        measured("original.int8.xml", "openvino", 0.5, 0.5),
        measured("original", "torch", 0.75, None, threads=2),
    ]
    for m in data["measurements"]:
        m["device"] = CPU
    return data


def test_baseline_references_of_an_odd_run():
    baseline = make_baseline(build(_many_fp32()))
    rows = [(e["artifact"], e["runtime"], e["threads"], e["reference"], e["latency_ratio"], e["p50_ms"], e["machine"])
            for e in baseline["entries"]]
    assert rows == [
        ("original", "torch", 1, "original", 1.0, 4.0, "Xeon [avx2]"),
        # the shallowest fp32 on onnxruntime, the first listed of two alike; never the int8
        (INT8, "onnxruntime", 1, "distill.onnx", 0.25, 0.25, "Xeon [avx2]"),
        ("prune.onnx", "onnxruntime", 1, "distill.onnx", 2.0, 2.0, "Xeon [avx2]"),
        ("distill.onnx", "onnxruntime", 1, "distill.onnx", 1.0, 1.0, "Xeon [avx2]"),
        ("original.int8.xml", "openvino", 1, None, None, 0.5, None),  # nothing fp32 beside it
        ("original", "torch", 2, None, None, None, None),  # no latency, and nothing else at 2 threads
    ]
    assert baseline["created"].endswith("+00:00")


def _sized_run() -> dict[str, Any]:
    data = run()
    data["artifacts"][1]["size_bytes"] = 123_456_789  # 123.456789 MB: four places tell 1e6 from 1e6 + 1
    data["measurements"].append(measured(INT8, "onnxruntime", 0.5, 0.25, threads=2))
    data["measurements"].append(measured("original.onnx", "onnxruntime", 0.75, 1.0, threads=2))
    for m in data["measurements"]:
        m["device"] = CPU
    return data


def test_an_unchanged_run_has_one_exact_size_check_per_artifact():
    checks = compare(build(_sized_run()), make_baseline(build(_sized_run())))
    assert all(c.passed for c in checks)
    sizes = gate(checks, "baseline.size")
    assert [c.artifact for c in sizes] == ["original", "original.onnx", INT8]
    assert sizes[1] == Check("baseline.size", "original.onnx", None, None, None, 0.0, 0.02, True,
                             "original.onnx: size 123.4568 MB vs baseline 123.4568 MB: change +0.0000 within "
                             "tolerance 0.0200")


def test_the_order_of_the_measurements_does_not_matter():
    baseline = make_baseline(build(_sized_run()))
    reordered = _sized_run()
    reordered["measurements"].reverse()
    assert all(c.passed for c in compare(build(reordered), baseline))


def test_an_entry_missing_or_failed_in_the_run_is_an_exact_failure_and_the_rest_are_still_compared():
    baseline = make_baseline(build(_sized_run()))
    data = _sized_run()
    del data["measurements"][0]  # original on torch, the first entry
    of(data, INT8).update(status="failed", latency=None)  # the first of the two int8 measurements
    checks = compare(build(data), baseline)
    present = gate(checks, "baseline.present")
    assert [(c.artifact, c.runtime, c.target, c.threads, c.limit, c.passed) for c in present] == [
        ("original", "torch", "local", 1, 0.0, False), (INT8, "onnxruntime", "local", 1, 0.0, False)]
    assert all(math.isnan(c.value) for c in present)
    assert [c.message for c in present] == [
        "original on torch (local, 1t): in the baseline but not measured in this run",
        f"{WHERE}: in the baseline but measurement failed in this run"]
    assert [(c.artifact, c.threads) for c in gate(checks, "baseline.latency_ratio")] == [
        ("original.onnx", 1), (INT8, 2), ("original.onnx", 2)]


def test_a_score_missing_from_the_run_fails_its_drift_with_an_exact_message():
    baseline = make_baseline(build(run()))
    data = run()
    of(data, INT8)["metric"] = {}
    (failed,) = [c for c in compare(build(data), baseline) if not c.passed]
    assert failed.gate == "baseline.metric" and math.isnan(failed.value)
    assert failed.message == (f"{WHERE}: top1 nan vs baseline 0.5000: change nan, not within tolerance 0.0050: "
                              "value missing or NaN")


def test_a_reference_missing_from_the_run_fails_the_latency_ratio():
    baseline = make_baseline(build(run()))
    data = run()
    data["measurements"] = [m for m in data["measurements"] if m["artifact"] != "original.onnx"]
    (ratio,) = [c for c in gate(compare(build(data), baseline), "baseline.latency_ratio") if c.artifact == INT8]
    assert not ratio.passed and math.isnan(ratio.value)
    assert ratio.message == (f"{WHERE}: p50 / original.onnx p50 nanx vs baseline 0.2500x: change nan, not within "
                             "tolerance 0.1500: value missing or NaN")


def test_a_faster_latency_ratio_beyond_tolerance_is_an_improvement_to_record():
    baseline = make_baseline(build(run()))
    data = run()
    of(data, INT8)["latency"] = latency(0.125)
    (failed,) = [c for c in compare(build(data), baseline) if not c.passed]
    assert failed.value == -0.5 and failed.message == (
        f"{WHERE}: p50 / original.onnx p50 0.1250x vs baseline 0.2500x: change -0.5000 beyond tolerance 0.1500: "
        f"{IMPROVED_HINT}")


def test_a_ratio_from_another_machine_is_skipped_with_an_exact_message():
    baseline = make_baseline(build(_sized_run()))
    data = run()  # its device is not recorded
    checks = [c for c in compare(build(data), baseline) if c.gate == "baseline.latency_ratio" and c.artifact == INT8]
    (skipped,) = checks
    assert skipped.skipped and skipped.passed and math.isnan(skipped.value) and skipped.limit == 0.15
    assert skipped.message == (f"{WHERE}: latency ratio not compared: the baseline's is from Xeon [avx2], this run "
                               "is on a machine it did not record (record a baseline for this machine with "
                               "`compress baseline`)")


def test_a_measured_artifact_missing_from_the_artifacts_fails_its_size():
    baseline = make_baseline(build(run()))
    data = copy.deepcopy(run())
    data["artifacts"] = [a for a in data["artifacts"] if a["name"] != INT8]
    (size,) = [c for c in gate(compare(build(data), baseline), "baseline.size") if c.artifact == INT8]
    assert not size.passed and size.message == (
        f"{INT8}: size nan MB vs baseline 0.1250 MB: change nan, not within tolerance 0.0200: value missing or NaN")


# --- cosines, agreement, dead outputs ----------------------------------------------------------

def test_cosines_row_by_row_with_a_non_finite_reference_row():
    outputs = np.array([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    reference = np.array([[np.nan, 1.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [2.0, 1.0]])
    got = tasks.cosines(outputs, reference)
    # non-finite reference row: 0; identical: 25 / (5 * 5); both zero: 1; one side zero: 0; 4 / (sqrt5 * sqrt5)
    np.testing.assert_allclose(got, [0.0, 1.0, 1.0, 0.0, 0.8], rtol=1e-15, atol=0)


def test_no_samples():
    empty = np.zeros((0, 3), dtype=np.float32)
    assert math.isnan(tasks.mean_cosine(empty, empty))
    assert tasks.non_finite_samples(empty) == 0


def test_dead_means_constant_outputs_while_the_reference_varies_across_samples():
    constant = np.ones((2, 2))
    assert not tasks.is_dead(constant, np.array([[1.0, 2.0], [1.0, 2.0]]))  # the reference is constant too
    assert tasks.is_dead(constant, np.array([[0.0, 0.0], [0.5, 0.0]]))  # it varies, by less than 1


def test_agreement_drops_only_the_non_finite_rows():
    outputs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert tasks.agreement("classification", outputs, np.array([[1.0, 0.0], [np.nan, 1.0]])) == 0.5
    nan_first = np.array([[np.nan, 0.0], [0.0, 1.0]])  # argmax of the NaN row is 0, as the reference's
    assert tasks.agreement("classification", nan_first, outputs) == 0.5


# --- metrics -----------------------------------------------------------------------------------

def test_perplexity_of_logits_far_apart_per_token():
    logits = np.array([[0.0, 0.0], [1000.0, 1000.0], [-1000.0, -1000.0]])  # each token: two equal logits
    assert metrics.perplexity(logits, np.array([0, 1, 0])) == pytest.approx(2.0, rel=1e-12)


def test_the_cosine_metric_without_a_reference_says_why():
    with pytest.raises(ValueError) as info:
        metrics.cosine(np.ones((2, 2)), None)
    assert str(info.value) == "the cosine metric needs the original model's outputs"


# --- parity ------------------------------------------------------------------------------------

def test_parity_of_mismatched_shapes_scores_nothing():
    check = parity(np.ones((2, 3)), np.ones((2, 2)), "ref", ParityThresholds(min_cosine=-1, min_agreement=0))
    assert not check.passed and check.cosine == 0.0 and check.agreement == 0.0 and math.isnan(check.max_abs_error)
    assert check.failures == ["outputs have shape (2, 3), the reference (2, 2)"]


def test_parity_of_an_embedding_model_agrees_by_cosine():
    outputs, reference = np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    check = parity(outputs, reference, "ref", ParityThresholds(min_cosine=0, min_agreement=0), kind="embedding")
    assert check.agreement == pytest.approx((1 + 1 / math.sqrt(2)) / 2, rel=1e-12)  # top-1 would say 0.5


def test_parity_thresholds_met_exactly_pass_and_just_missed_fail():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    outputs = reference + np.array([[0.5, 0.0], [0.0, 0.0]])  # max abs error exactly 0.5
    assert parity(outputs, reference, "ref", ParityThresholds(max_abs_error=0.5, min_cosine=0, min_agreement=1)).passed
    missed = parity(outputs, reference, "ref", ParityThresholds(max_abs_error=0.4375, min_cosine=0, min_agreement=1))
    assert missed.failures == ["max abs error 0.5 > 0.4375"]
    same = parity(reference, reference, "ref", ParityThresholds(min_cosine=1.0, min_agreement=1.0))
    assert same.cosine == 1.0 and same.passed  # 1/(1*1) and 4/(2*2): exactly 1


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)], ids=["no samples", "empty vectors"])
@pytest.mark.parametrize("kind", ["classification", "embedding"])
def test_parity_of_no_outputs_fails_instead_of_raising(shape, kind):
    empty = np.zeros(shape, dtype=np.float32)
    check = parity(empty, empty, "ref", ParityThresholds(min_cosine=0, min_agreement=0), kind)
    assert not check.passed and check.failures == ["no outputs to compare"]
    assert check.cosine == 0.0 and check.agreement == 0.0 and np.isnan(check.max_abs_error)
