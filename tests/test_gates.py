"""Gates and baselines: budgets on results.json, exact boundaries, baseline comparison as ratios,
JUnit / Markdown outputs, the `gate` and `baseline` commands, and one end-to-end run."""

from __future__ import annotations

import copy
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from compress.ci_outputs import render_markdown, write_junit
from compress.gate_cli import DEFAULT_TOLERANCES, baseline_command, gate_command, register
from compress.gates import (
    IMPROVED_HINT,
    Check,
    GatesConfig,
    Tolerances,
    compare,
    evaluate,
    exit_code,
    machine_class,
    make_baseline,
    robust_p50,
)
from compress.results import Results
from tests.conftest import printed_run, small_recipe

NAN = float("nan")
INT8 = "distill.int8.onnx"


# --- synthetic results -------------------------------------------------------------------------

def _latency(p50: float, p90: float | None = None, trials: list[float] | None = None) -> dict[str, Any]:
    p90 = p50 * 1.25 if p90 is None else p90
    stats = {"p50_ms": p50, "p90_ms": p90, "p99_ms": p90, "mean_ms": p50, "min_ms": p50, "max_ms": p90,
             "runs": 10, "seconds": 0.01, "throughput_per_s": 1000.0, "batch_size": 1, "threads": 1, "warmup": 0}
    if trials is not None:
        stats["trial_p50_ms"] = trials
    return stats


def _artifact(name: str, fmt: str, precision: str, size: int, parent: str | None, lineage: list[str]) -> dict:
    return {"name": name, "id": f"id-{name}", "format": fmt, "precision": precision, "path": f"artifacts/{name}",
            "sha256": "0" * 64, "size_bytes": size, "lineage": lineage,
            "parent": f"id-{parent}" if parent else None}


def _measurement(artifact: str, runtime: str, top1: float, p50: float, threads: int = 1) -> dict:
    return {"artifact": artifact, "runtime": runtime, "target": "local", "threads": threads, "status": "ok",
            "metric": {"top1": top1}, "latency": _latency(p50)}


def results_dict() -> dict[str, Any]:
    """A run shaped like the quickstart's, with numbers chosen so float arithmetic on them is exact."""
    return {
        "compress_version": "0.1.0", "run_id": "20260101-000000-test", "recipe": "/r.yaml", "recipe_name": "demo",
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00", "status": "complete",
        "task": {"kind": "classification", "metric": "top1"}, "data": {}, "stages": [], "versions": {},
        "artifacts": [
            _artifact("original", "torch", "fp32", 500_000, None, ["original"]),
            _artifact("distill", "torch", "fp32", 250_000, "original", ["original", "distill"]),
            _artifact("original.onnx", "onnx", "fp32", 500_000, "original", ["original", "export.onnx"]),
            _artifact("distill.onnx", "onnx", "fp32", 250_000, "distill", ["original", "distill", "export.onnx"]),
            _artifact(INT8, "onnx", "int8", 75_000, "distill.onnx",
                      ["original", "distill", "export.onnx", "quantize.onnxruntime"]),
        ],
        "measurements": [
            _measurement("original.onnx", "onnxruntime", 0.75, 1.0),  # first, but not the accuracy reference
            _measurement("original", "torch", 0.75, 4.0),
            _measurement("distill", "torch", 0.75, 2.0),
            _measurement("distill.onnx", "onnxruntime", 0.75, 0.5),
            _measurement(INT8, "onnxruntime", 0.5, 0.25),
        ],
    }


def build(data: dict[str, Any] | None = None) -> Results:
    return Results.model_validate(data if data is not None else results_dict())


def measurement(data: dict[str, Any], artifact: str) -> dict[str, Any]:
    return next(m for m in data["measurements"] if m["artifact"] == artifact)


def only(checks: list[Check], gate: str, artifact: str | None = None) -> list[Check]:
    return [c for c in checks if c.gate == gate and (artifact is None or c.artifact == artifact)]


def one(checks: list[Check], gate: str, artifact: str) -> Check:
    (check,) = only(checks, gate, artifact)
    return check


# --- budgets -----------------------------------------------------------------------------------

def test_accuracy_drop_exactly_at_the_budget_passes_and_just_over_fails():
    data = results_dict()
    gates = GatesConfig(max_accuracy_drop=0.25, artifacts=[INT8])
    at = one(evaluate(build(data), gates), "max_accuracy_drop", INT8)
    assert at.value == 0.25 and at.limit == 0.25 and at.passed

    measurement(data, INT8)["metric"]["top1"] = 0.5 - 1e-12
    over = one(evaluate(build(data), gates), "max_accuracy_drop", INT8)
    assert not over.passed and exit_code([over]) == 1
    assert over.message.startswith(f"{INT8} on onnxruntime (local, 1t): top1 drop 0.250000000001 > budget 0.25")
    assert over.message.endswith("(original 0.7500, now 0.5000)")


def test_relative_budget_is_a_share_of_the_original_score():
    data = results_dict()
    measurement(data, "original")["metric"]["top1"] = 0.5
    measurement(data, INT8)["metric"]["top1"] = 0.25
    exact = one(evaluate(build(data), GatesConfig(max_accuracy_drop="50%")), "max_accuracy_drop", INT8)
    assert exact.limit == 0.25 and exact.value == 0.25 and exact.passed
    assert "(50% of original)" in exact.message

    measurement(data, "original")["metric"]["top1"] = 0.75
    checks = evaluate(build(data), GatesConfig(max_accuracy_drop="1%"))  # 1% of 0.75 = 0.0075
    assert one(checks, "max_accuracy_drop", INT8).limit == pytest.approx(0.0075)
    measurement(data, INT8)["metric"]["top1"] = 0.7426
    assert one(evaluate(build(data), GatesConfig(max_accuracy_drop="1%")), "max_accuracy_drop", INT8).passed
    measurement(data, INT8)["metric"]["top1"] = 0.7424
    assert not one(evaluate(build(data), GatesConfig(max_accuracy_drop="1%")), "max_accuracy_drop", INT8).passed


def test_the_original_is_the_torch_measurement_and_is_not_gated_itself():
    data = results_dict()
    measurement(data, "original")["metric"]["top1"] = 0.8125  # torch; original.onnx (measured first) says 0.75
    checks = evaluate(build(data), GatesConfig(max_accuracy_drop=0.0625))
    assert not only(checks, "max_accuracy_drop", "original")
    assert one(checks, "max_accuracy_drop", "original.onnx").value == 0.0625
    assert one(checks, "max_accuracy_drop", "distill.onnx").passed
    assert len(only(checks, "max_accuracy_drop")) == 4


@pytest.mark.parametrize("gate", ["accuracy", "original_accuracy", "missing_metric", "p90", "speedup_int8",
                                  "speedup_parent"])
def test_nan_or_missing_values_fail_every_gate(gate: str):
    data = results_dict()
    int8 = measurement(data, INT8)
    if gate == "accuracy":
        int8["metric"]["top1"] = NAN
    elif gate == "original_accuracy":
        measurement(data, "original")["metric"]["top1"] = NAN
    elif gate == "missing_metric":
        int8["metric"] = {}
    elif gate == "p90":
        int8["latency"]["p90_ms"] = NAN
    elif gate == "speedup_int8":
        int8["latency"]["p50_ms"] = NAN
    else:
        measurement(data, "distill.onnx")["latency"]["p50_ms"] = NAN
    gates = GatesConfig(max_accuracy_drop=1.0, max_p90_ms=1e9, min_speedup=1e-9, artifacts=[INT8])
    checks = evaluate(build(data), gates)
    failed = [c for c in checks if not c.passed]
    assert len(failed) == 1, failed
    assert failed[0].artifact == INT8 and math.isnan(failed[0].value)
    assert exit_code(checks) == 1


def test_latency_not_measured_fails_the_p90_gate():
    data = results_dict()
    measurement(data, INT8)["latency"] = None
    check = one(evaluate(build(data), GatesConfig(max_p90_ms=100.0)), "max_p90_ms", INT8)
    assert not check.passed and "latency was not measured" in check.message


def test_min_speedup_compares_int8_with_its_fp32_parent_on_the_same_runtime():
    results = build()  # distill.onnx p50 0.5 ms, int8 0.25 ms: 2x
    at = evaluate(results, GatesConfig(min_speedup=2.0))
    (check,) = only(at, "min_speedup")  # only the int8 artifact has a speedup
    assert check.artifact == INT8 and check.runtime == "onnxruntime" and check.value == 2.0 and check.passed
    assert "vs distill.onnx" in check.message
    (over,) = only(evaluate(results, GatesConfig(min_speedup=2.0 + 1e-12)), "min_speedup")
    assert not over.passed and "< budget" in over.message


def test_min_speedup_uses_the_median_of_the_trials_and_needs_the_parent_on_the_same_threads():
    data = results_dict()
    measurement(data, INT8)["latency"]["trial_p50_ms"] = [0.125, 0.125, 9.0]
    (check,) = only(evaluate(build(data), GatesConfig(min_speedup=4.0)), "min_speedup")
    assert check.value == 4.0 and check.passed
    measurement(data, INT8)["threads"] = 2  # the parent ran with 1 thread only: nothing to compare
    assert not only(evaluate(build(data), GatesConfig(min_speedup=4.0)), "min_speedup")


def test_size_and_p90_budgets_are_inclusive():
    results = build()
    checks = evaluate(results, GatesConfig(max_size_mb=0.25, max_p90_ms=0.3125, artifacts=["distill*"]))
    sizes = {c.artifact: c for c in only(checks, "max_size_mb")}
    assert set(sizes) == {"distill", "distill.onnx", INT8}
    assert sizes["distill"].value == 0.25 and sizes["distill"].passed and sizes[INT8].passed
    p90 = {c.artifact: c for c in only(checks, "max_p90_ms")}
    assert p90[INT8].value == 0.3125 and p90[INT8].passed  # 1.25 x 0.25
    assert not p90["distill"].passed and p90["distill"].message == (
        "distill on torch (local, 1t): p90 2.5000 ms > budget 0.3125 ms")
    small = evaluate(results, GatesConfig(max_size_mb=0.074999, artifacts=[INT8]))
    assert one(small, "max_size_mb", INT8).message == f"{INT8}: size 0.075000 MB > budget 0.074999 MB"


def test_artifact_globs_select_and_a_glob_that_matches_nothing_fails():
    checks = evaluate(build(), GatesConfig(max_size_mb=10, artifacts=["*.int8.*", "*.tflite"]))
    assert [c.artifact for c in only(checks, "max_size_mb")] == [INT8]
    (unmatched,) = only(checks, "artifacts")
    assert not unmatched.passed and "'*.tflite' matches no artifact" in unmatched.message


def test_a_complete_run_with_no_budget_passes_with_one_check():
    (check,) = evaluate(build(), GatesConfig())
    assert check.gate == "complete" and check.passed and exit_code([check]) == 0


@pytest.mark.parametrize("status", ["failed", "timeout"])
def test_an_incomplete_run_never_passes(status: str):
    data = results_dict()
    data["status"] = "incomplete"
    measurement(data, "distill.onnx").update(status=status, error="agent crashed", latency=None)
    checks = evaluate(build(data), GatesConfig(max_size_mb=100))
    (complete,) = only(checks, "complete")
    assert not complete.passed and f"distill.onnx on onnxruntime (local, 1t): measurement {status}" in complete.message
    assert all(c.passed for c in checks if c.gate != "complete")
    assert exit_code(checks) == 3

    data["measurements"] = [m for m in data["measurements"] if m["status"] == "ok"]  # status alone says it
    (run_level,) = only(evaluate(build(data), GatesConfig()), "complete")
    assert not run_level.passed and "incomplete" in run_level.message


@pytest.mark.parametrize(("raw", "message"), [
    ({"max_accuracy_drop": "1 point"}, "or a percentage of the reference's score like '1%' (got '1 point')"),
    ({"max_accuracy_drop": "-1%"}, "like '1%' (got '-1%')"),
    ({"max_accuracy_drop": "150%"}, "a relative drop is at most 100% (got '150%')"),
    ({"max_accuracy_drop": -0.01}, "must be a finite number >= 0 (got -0.01)"),
    ({"max_accuracy_drop": float("inf")}, "must be a finite number >= 0 (got inf)"),
    ({"max_size_mb": 0}, "greater than 0"),
    ({"min_speedup": float("nan")}, "finite"),
    ({"max_p90": 3}, "Extra inputs"),
])
def test_gates_config_rejects_bad_budgets(raw: dict[str, Any], message: str):
    with pytest.raises(ValueError) as info:
        GatesConfig.model_validate(raw)
    assert message in str(info.value)


def test_gates_config_reads_percentages():
    assert GatesConfig(max_accuracy_drop=" 1.5 %").max_accuracy_drop == "1.5%"
    assert GatesConfig(max_accuracy_drop=1).max_accuracy_drop == 1.0
    assert GatesConfig(max_accuracy_drop="2%").allowed_drop(0.5) == 0.01


# --- baselines ---------------------------------------------------------------------------------

def test_baseline_keeps_latency_as_a_ratio_to_a_reference_in_the_same_run():
    baseline = make_baseline(build())
    assert {"schema_version", "created", "recipe_name", "compress_version", "entries"} <= set(baseline)
    entries = {(e["artifact"], e["runtime"]): e for e in baseline["entries"]}
    assert entries[("distill", "torch")]["reference"] == "original"
    assert entries[("distill", "torch")]["latency_ratio"] == 0.5
    # no `original` on onnxruntime: the fp32 artifact closest to it, original.onnx
    assert entries[(INT8, "onnxruntime")]["reference"] == "original.onnx"
    assert entries[(INT8, "onnxruntime")]["latency_ratio"] == 0.25
    assert entries[(INT8, "onnxruntime")]["p50_ms"] == 0.25 and entries[(INT8, "onnxruntime")]["size_bytes"] == 75_000
    assert json.loads(json.dumps(baseline)) == baseline


def test_an_unchanged_run_passes_its_baseline():
    results = build()
    checks = compare(results, make_baseline(results))
    assert checks and all(c.passed for c in checks)
    assert len(only(checks, "baseline.size")) == 5  # once per artifact


def test_scaling_every_latency_passes_but_one_slower_artifact_fails():
    baseline = make_baseline(build())
    slower_machine = results_dict()
    for m in slower_machine["measurements"]:
        m["latency"] = _latency(3 * m["latency"]["p50_ms"])
    assert all(c.passed for c in compare(build(slower_machine), baseline))

    one_slower = results_dict()
    measurement(one_slower, INT8)["latency"] = _latency(0.25 * 1.5)
    (failed,) = [c for c in compare(build(one_slower), baseline) if not c.passed]
    assert failed.gate == "baseline.latency_ratio" and failed.artifact == INT8
    assert failed.value == 0.5 and failed.limit == 0.15
    assert "p50 / original.onnx p50 0.3750x vs baseline 0.2500x: change +0.5000 beyond tolerance 0.1500" in (
        failed.message)


def test_latency_ratios_use_the_median_of_the_trials():
    baseline = make_baseline(build())
    noisy = results_dict()
    measurement(noisy, INT8)["latency"]["trial_p50_ms"] = [0.25, 0.25, 40.0]
    measurement(noisy, INT8)["latency"]["p50_ms"] = 0.5  # pooled p50 pulled up by the noisy round
    assert robust_p50(build(noisy).measurements[-1].latency) == 0.25
    assert all(c.passed for c in compare(build(noisy), baseline))


def test_a_worse_metric_beyond_tolerance_fails_and_names_artifact_metric_value_and_budget():
    baseline = make_baseline(build())
    worse = results_dict()
    measurement(worse, INT8)["metric"]["top1"] = 0.5 - 0.0078125  # beyond 0.005
    (failed,) = [c for c in compare(build(worse), baseline) if not c.passed]
    assert failed.gate == "baseline.metric" and failed.value == -0.0078125
    assert failed.message == (f"{INT8} on onnxruntime (local, 1t): top1 0.4922 vs baseline 0.5000: "
                              "change -0.0078 beyond tolerance 0.0050 (worse)")


def test_an_improvement_beyond_tolerance_fails_so_baselines_change_on_purpose():
    baseline = make_baseline(build())
    better = results_dict()
    measurement(better, INT8)["metric"]["top1"] = 0.625
    smaller = next(a for a in better["artifacts"] if a["name"] == INT8)
    smaller["size_bytes"] = 50_000
    failed = [c for c in compare(build(better), baseline) if not c.passed]
    assert {c.gate for c in failed} == {"baseline.metric", "baseline.size"}
    assert all(c.message.endswith(IMPROVED_HINT) for c in failed)
    assert "update the baseline on purpose with `compress baseline`" in IMPROVED_HINT


def test_baseline_tolerances_are_inclusive_and_configurable():
    baseline = make_baseline(build())
    moved = results_dict()
    measurement(moved, INT8)["metric"]["top1"] = 0.5 + 0.125
    next(a for a in moved["artifacts"] if a["name"] == INT8)["size_bytes"] = 75_000 + 1_500  # +2% exactly
    tolerances = Tolerances(metric=0.125, size=0.02)
    assert all(c.passed for c in compare(build(moved), baseline, tolerances))
    failed = [c for c in compare(build(moved), baseline, Tolerances(metric=0.125 - 1e-12, size=0.02)) if not c.passed]
    assert [c.gate for c in failed] == ["baseline.metric"]


def test_an_entry_missing_from_the_run_fails():
    baseline = make_baseline(build())
    data = results_dict()
    data["measurements"] = [m for m in data["measurements"] if m["artifact"] != INT8]
    (missing,) = [c for c in compare(build(data), baseline) if not c.passed]
    assert missing.gate == "baseline.present" and missing.artifact == INT8
    assert "in the baseline but not measured in this run" in missing.message


def test_a_nan_metric_fails_the_baseline():
    baseline = make_baseline(build())
    data = results_dict()
    measurement(data, INT8)["metric"]["top1"] = NAN
    (failed,) = [c for c in compare(build(data), baseline) if not c.passed]
    assert failed.gate == "baseline.metric" and "missing or NaN" in failed.message


AVX2 = {"cpu": "AMD EPYC", "vector_isa": ["avx2"], "int8_dot_product": []}
VNNI = {"cpu": "AMD EPYC", "vector_isa": ["avx2", "avx512f"], "int8_dot_product": ["avx512_vnni"]}


def on_machine(device: dict[str, Any]) -> dict[str, Any]:
    data = results_dict()
    for m in data["measurements"]:
        m["device"] = device
    return data


def test_latency_ratios_are_compared_only_on_the_kind_of_machine_they_were_measured_on():
    baseline = make_baseline(build(on_machine(VNNI)))
    assert {e["machine"] for e in baseline["entries"]} == {"AMD EPYC [avx2 avx512f avx512_vnni]"}
    slower_int8 = on_machine(VNNI)
    measurement(slower_int8, INT8)["latency"] = _latency(0.25 * 1.5)
    (failed,) = [c for c in compare(build(slower_int8), baseline) if not c.passed]
    assert failed.gate == "baseline.latency_ratio" and not failed.skipped

    elsewhere = on_machine(AVX2)
    measurement(elsewhere, INT8)["latency"] = _latency(0.25 * 1.5)  # int8 gains less without VNNI
    measurement(elsewhere, INT8)["metric"]["top1"] = 0.375  # ... but accuracy is compared everywhere
    checks = compare(build(elsewhere), baseline)
    skipped = [c for c in checks if c.skipped]
    assert {c.gate for c in skipped} == {"baseline.latency_ratio"} and len(skipped) == 5
    assert all(c.passed and math.isnan(c.value) for c in skipped)  # not a failure, and no number shown
    assert ("latency ratio not compared: the baseline's is from AMD EPYC [avx2 avx512f avx512_vnni], "
            "this run is on AMD EPYC [avx2]") in skipped[0].message
    assert [c.gate for c in checks if not c.passed] == ["baseline.metric"]
    assert exit_code(checks) == 1

    # a baseline that did not record its machine (older files) is compared everywhere
    unrecorded = make_baseline(build())
    assert {e["machine"] for e in unrecorded["entries"]} == {None}
    assert [c.gate for c in compare(build(elsewhere), unrecorded) if not c.passed] == [
        "baseline.metric", "baseline.latency_ratio"]


def test_a_gpu_is_its_own_kind_of_machine():
    assert machine_class({**VNNI, "gpu": {"name": "NVIDIA H200"}}) == "GPU NVIDIA H200"
    assert machine_class({}) is None


def test_the_gate_command_reports_what_it_did_not_compare(tmp_path: Path):
    baseline = tmp_path / "baseline.json"
    assert _invoke(baseline_command, _write_run(tmp_path / "vnni", on_machine(VNNI)), "--out", baseline).exit_code == 0
    result = _invoke(gate_command, _write_run(tmp_path / "avx2", on_machine(AVX2)), "--baseline", baseline,
                     "--junit", tmp_path / "gate.xml", "--markdown", tmp_path / "summary.md")
    assert result.exit_code == 0, result.output
    assert "SKIP baseline.latency_ratio: distill on torch (local, 1t): latency ratio not compared" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "gate: all 11 checks passed, 5 not compared"
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    assert suite.get("skipped") == "5" and suite.get("failures") == "0"
    assert len([case for case in suite.findall("testcase") if case.find("skipped") is not None]) == 5
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("### ✅ compress gate · demo · run 20260101-000000-test: all 11 checks passed, "
                              "5 not compared")
    assert "| ⏭️ | baseline.latency_ratio | distill | torch (local, 1t) | - | - |" in summary


def test_a_baseline_of_the_artifacts_a_team_ships(tmp_path: Path):
    run = _write_run(tmp_path / "run", results_dict())
    baseline = tmp_path / "baseline.json"
    written = _invoke(baseline_command, run, "--out", baseline, "--artifacts", "original", "--artifacts", "*.int8.*")
    assert written.exit_code == 0 and "(2 measurements" in written.stdout
    assert {e["artifact"] for e in json.loads(baseline.read_text())["entries"]} == {"original", INT8}
    none = CliRunner().invoke(baseline_command, [str(run), "--out", str(tmp_path / "b2.json"), "--artifacts", "x*"])
    assert none.exit_code == 2 and "--artifacts: no measured artifact matches x*" in none.stderr
    assert not (tmp_path / "b2.json").exists()


def test_cli_defaults_match_the_tolerances_model():
    assert Tolerances().model_dump() == DEFAULT_TOLERANCES


# --- CI outputs --------------------------------------------------------------------------------

def _mixed_checks() -> list[Check]:
    data = results_dict()
    measurement(data, INT8)["metric"]["top1"] = 0.25
    return evaluate(build(data), GatesConfig(max_accuracy_drop=0.25, max_size_mb=0.3))


def test_junit_counts_and_attributes(tmp_path: Path):
    checks = _mixed_checks()
    failed = [c for c in checks if not c.passed]
    assert len(failed) == 3  # int8 accuracy, original and original.onnx size
    path = write_junit(checks, tmp_path / "reports" / "gate.xml", suite_name="compress gate demo")
    root = ET.parse(path).getroot()
    (suite,) = root.iter("testsuite")
    assert suite.get("name") == "compress gate demo"
    assert suite.get("tests") == str(len(checks)) and suite.get("failures") == "3"
    assert suite.get("errors") == "0" and suite.get("skipped") == "0"
    cases = suite.findall("testcase")
    assert len(cases) == len(checks)
    assert all(case.get("classname") and case.get("name") for case in cases)
    failures = {(case.get("classname"), case.get("name")): case.find("failure") for case in cases
                if case.find("failure") is not None}
    assert set(failures) == {(f"{INT8}.onnxruntime", "max_accuracy_drop"), ("original", "max_size_mb"),
                             ("original.onnx", "max_size_mb")}
    message = failures[(f"{INT8}.onnxruntime", "max_accuracy_drop")].get("message")
    assert message.startswith(f"{INT8} on onnxruntime (local, 1t): top1 drop 0.5000 > budget 0.2500")
    assert not list(tmp_path.joinpath("reports").glob(".*partial"))


def test_markdown_summary_has_a_headline_and_a_table():
    checks = _mixed_checks()
    text = render_markdown(checks, "gates · demo")
    lines = text.splitlines()
    assert lines[0] == f"### ❌ gates · demo: 3 of {len(checks)} checks failed, {len(checks) - 3} passed"
    assert "| | gate | artifact | runtime | value | limit |" in lines
    assert f"| ❌ | max_accuracy_drop | {INT8} | onnxruntime (local, 1t) | 0.5000 | 0.2500 |" in lines
    assert "| ✅ | max_size_mb | distill.onnx | - | 0.2500 | 0.3000 |" in lines
    passing = render_markdown([c for c in checks if c.passed], "gates")
    assert passing.startswith("### ✅ gates: all ") and "❌" not in passing


# --- the commands ------------------------------------------------------------------------------

def _invoke(command: click.Command, *args: Any) -> Result:
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def _write_run(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder


def test_gate_and_baseline_commands_round_trip(tmp_path: Path):
    run = _write_run(tmp_path / "run", results_dict())
    baseline = tmp_path / "baselines" / "demo.json"
    written = _invoke(baseline_command, run, "--out", baseline)
    assert written.exit_code == 0, written.output
    assert written.stdout.startswith(f"baseline: wrote {baseline} (5 measurements")
    passed = _invoke(gate_command, run, "--baseline", baseline, "--junit", tmp_path / "gate.xml",
                     "--markdown", tmp_path / "summary.md")
    assert passed.exit_code == 0, passed.output
    assert passed.stdout.strip().splitlines()[-1].startswith("gate: all ")
    assert ET.parse(tmp_path / "gate.xml").getroot().find("testsuite").get("failures") == "0"
    assert (tmp_path / "summary.md").read_text().startswith("### ✅")

    worse = results_dict()
    measurement(worse, INT8)["metric"]["top1"] = 0.375
    failed = _invoke(gate_command, _write_run(tmp_path / "worse", worse), "--baseline", baseline)
    assert failed.exit_code == 1
    assert (f"FAIL baseline.metric: {INT8} on onnxruntime (local, 1t): top1 0.3750 vs baseline 0.5000: "
            "change -0.1250 beyond tolerance 0.0050 (worse)") in failed.stdout
    assert failed.stderr.startswith("error: gate failed: ")
    assert _invoke(gate_command, tmp_path / "worse", "--baseline", baseline, "--metric-tolerance", 0.125).exit_code == 0

    better = results_dict()
    measurement(better, INT8)["metric"]["top1"] = 0.625
    improved = _invoke(gate_command, _write_run(tmp_path / "better", better), "--baseline", baseline)
    assert improved.exit_code == 1 and "update the baseline on purpose with `compress baseline`" in improved.stdout

    updated = _invoke(baseline_command, tmp_path / "better", "--out", baseline)
    assert updated.exit_code == 0
    assert f"changed: {INT8} on onnxruntime (local, 1t): top1 0.6250 vs baseline 0.5000" in updated.stdout
    assert updated.stdout.strip().splitlines()[-1].startswith(f"baseline: updated {baseline}")
    assert _invoke(gate_command, tmp_path / "better", "--baseline", baseline).exit_code == 0


def test_gate_command_with_a_gates_file(tmp_path: Path):
    run = _write_run(tmp_path / "run", results_dict())
    gates = tmp_path / "gates.yaml"
    gates.write_text("max_accuracy_drop: 0.25\nartifacts: ['*.int8.*']\n")
    assert _invoke(gate_command, run / "results.json", "--gates", gates).exit_code == 0
    gates.write_text("max_accuracy_drop: 0.125\n")
    result = _invoke(gate_command, run, "--gates", gates, "--markdown", tmp_path / "summary.md")
    assert result.exit_code == 1
    assert f"FAIL max_accuracy_drop: {INT8} on onnxruntime (local, 1t): top1 drop 0.2500 > budget 0.1250" in (
        result.stdout)
    # a recipe's gates section works as a gates file
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**small_recipe(), "gates": {"max_accuracy_drop": 0.25}}))
    assert _invoke(gate_command, run, "--gates", recipe).exit_code == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("max_accuracy_drop: 0.01\nmax_size_mb: -1\n", "gates.yaml:2: max_size_mb: must be > 0.0 (got -1)"),
    ("max_accuracy_drop: lots\n", "gates.yaml:1: max_accuracy_drop: must be an absolute drop"),
    ("max_acuracy_drop: 0.01\n", "gates.yaml:1: max_acuracy_drop: unknown key 'max_acuracy_drop' "
                                 "(did you mean 'max_accuracy_drop'?)"),
    ("max_accuracy_drop: [0.01\n", "gates.yaml:2: invalid YAML"),
    ("- 0.01\n", "gates.yaml: a gates file is a mapping of"),
    ("artifacts: ['*']\n", "gates.yaml: sets no budget"),
])
def test_a_bad_gates_file_is_bad_input(tmp_path: Path, text: str, expected: str):
    run = _write_run(tmp_path / "run", results_dict())
    gates = tmp_path / "gates.yaml"
    gates.write_text(text)
    result = _invoke(gate_command, run, "--gates", gates)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path}/{expected}"), result.stderr


def test_bad_results_baseline_or_usage_is_exit_2(tmp_path: Path):
    run = _write_run(tmp_path / "run", results_dict())
    baseline = tmp_path / "b.json"
    assert _invoke(baseline_command, run, "--out", baseline).exit_code == 0

    nothing = _invoke(gate_command, run)
    assert (nothing.exit_code, nothing.stderr) == (
        2, "error: nothing to check: give --gates GATES.yaml and/or --baseline BASELINE.json\n")
    missing = _invoke(gate_command, tmp_path / "nope", "--baseline", baseline)
    assert missing.exit_code == 2 and missing.stderr == f"error: {tmp_path}/nope: results file not found\n"

    broken = results_dict()
    broken["measurements"][1]["status"] = "crashed"
    result = _invoke(gate_command, _write_run(tmp_path / "broken", broken), "--baseline", baseline)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path}/broken/results.json: measurements[1].status: must be ")

    (tmp_path / "bad.json").write_text("{not json")
    bad = _invoke(gate_command, run, "--baseline", tmp_path / "bad.json")
    assert (bad.exit_code, bad.stderr) == (2, f"error: {tmp_path}/bad.json: invalid JSON: key must be a string at "
                                              "line 1 column 2 (got '{not json')\n")
    (tmp_path / "old.json").write_text(json.dumps({**json.loads(baseline.read_text()), "schema_version": 9}))
    stale = _invoke(gate_command, run, "--baseline", tmp_path / "old.json")
    assert (stale.exit_code, stale.stderr) == (2, f"error: {tmp_path}/old.json: schema_version: must be 1 (got 9)\n")
    negative = _invoke(gate_command, run, "--baseline", baseline, "--size-tolerance", -1)
    assert negative.exit_code == 2 and negative.stdout == ""
    assert negative.stderr.endswith("Error: Invalid value for '--size-tolerance': -1.0 is not in the range x>=0.\n")
    # every refusal above wrote nothing: no JUnit, no Markdown, no new baseline
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "bad.json", "broken", "old.json", "run"]


def test_an_incomplete_run_exits_3_and_writes_no_baseline(tmp_path: Path):
    data = results_dict()
    data["status"] = "incomplete"
    measurement(data, INT8).update(status="timeout", error="no answer in 600 s", latency=None)
    run = _write_run(tmp_path / "run", data)
    gates = tmp_path / "gates.yaml"
    gates.write_text("max_size_mb: 100\n")  # every budget passes: still not a pass
    result = _invoke(gate_command, run, "--gates", gates, "--junit", tmp_path / "gate.xml")
    assert result.exit_code == 3
    assert f"FAIL complete: {INT8} on onnxruntime (local, 1t): measurement timeout: no answer in 600 s" in result.stdout
    assert "incomplete" in result.stderr
    assert ET.parse(tmp_path / "gate.xml").getroot().find("testsuite").get("failures") == "1"

    refused = _invoke(baseline_command, run, "--out", tmp_path / "b.json")
    assert refused.exit_code == 3 and "no baseline from an incomplete run" in refused.stderr
    assert not (tmp_path / "b.json").exists()


def test_register_adds_both_commands():
    group = click.Group("compress")
    register(group)
    assert {"gate", "baseline"} <= set(group.commands)
    help_text = _invoke(gate_command, "--help").output
    assert "3  the run is incomplete" in help_text and "2  bad input or usage" in help_text


# --- end to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_run_its_baseline_a_harmful_change_and_a_crash(cli, write_recipe, tmp_path: Path):
    # int8 of the wrecked model below agrees less with its own fp32 parent (0.93 here): a looser parity
    # threshold keeps this test about the baseline gate
    recipe = write_recipe(small_recipe(verify={"runtimes": ["torch", "onnxruntime"], "targets": ["local"],
                                               "latency": {"warmup": 0, "min_runs": 3, "min_seconds": 0},
                                               "parity": {"int8": {"min_cosine": 0.9, "min_agreement": 0.8}}}))
    out = tmp_path / "runs"
    run = cli("run", recipe, "--out", out)
    assert run.exit_code == 0, run.stderr
    first = printed_run(run.stdout)
    baseline = tmp_path / "baseline.json"
    assert _invoke(baseline_command, first, "--out", baseline).exit_code == 0
    same = _invoke(gate_command, first, "--baseline", baseline)
    assert same.exit_code == 0, same.output

    # a learning rate that wrecks distillation: the distilled model and its int8 lose most of their top-1
    harmful = cli("run", recipe, "--out", out, "--resume", "--set", "stages[1].distill.lr=5")
    assert harmful.exit_code == 0, harmful.stderr
    second = printed_run(harmful.stdout)
    assert second != first
    worse = _invoke(gate_command, second, "--baseline", baseline)
    assert worse.exit_code == 1
    failing = [line for line in worse.stdout.splitlines() if line.startswith("FAIL baseline.metric: ")]
    assert any(line.startswith(f"FAIL baseline.metric: {INT8} on onnxruntime (local, 1t): top1 ") and
               line.endswith("beyond tolerance 0.0050 (worse)") for line in failing), worse.stdout
    assert not any("original" in line for line in failing)  # the original did not change

    crashed = json.loads((first / "results.json").read_text())
    crashed["status"] = "incomplete"
    crashed["measurements"][-1].update(status="failed", error="the agent exited with signal 11", latency=None)
    copy_folder = _write_run(tmp_path / "crashed", copy.deepcopy(crashed))
    incomplete = _invoke(gate_command, copy_folder, "--baseline", baseline)
    assert incomplete.exit_code == 3
    assert "measurement failed: the agent exited with signal 11" in incomplete.stdout
