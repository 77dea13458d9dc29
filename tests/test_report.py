"""The table a person reads (table.txt) and the headline summary: every cell and line checked
against numbers worked out by hand from the synthetic run, including the degenerate rows."""

from __future__ import annotations

from typing import Any

import pytest

from compress.report import render_table, summarize
from tests.test_gates import INT8, build, measurement, results_dict

COLUMNS = ["artifact", "format", "precision", "int8 MACs", "runtime", "target", "threads", "top1", "agreement",
           "parity", "size", "params", "MACs", "p50 ms", "p90 ms", "p99 ms", "runs"]


def _rows(table: str) -> dict[str, list[str]]:
    """The body rows of the rendered table, by artifact, as the cells a person sees."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def _header(table: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith("┃"))
    return [cell.strip() for cell in line.strip("┃").split("┃")]


def _parity(passed: bool, cosine: float, failures: list[str] | None = None) -> dict[str, Any]:
    return {"reference": "distill", "max_abs_error": 0.5, "cosine": cosine, "agreement": 0.9,
            "thresholds": {"min_cosine": 0.99, "min_agreement": 0.98, "max_abs_error": None},
            "passed": passed, "failures": failures or []}


def _with_details() -> dict[str, Any]:
    data = results_dict()
    by_name = {a["name"]: a for a in data["artifacts"]}
    by_name["original"].update(params=1_234_567, macs=2_000_000_000)
    by_name["distill"].update(params=999, macs=500_000_000)
    by_name[INT8]["info"] = {"int8_macs_share": 0.876}
    measurement(data, INT8).update(agreement=0.0, parity=_parity(True, 0.99871))
    measurement(data, "distill.onnx")["agreement"] = 1.0
    return data


def test_each_cell_of_each_row_is_what_the_results_say():
    table = render_table(build(_with_details()))
    assert _header(table) == COLUMNS
    rows = _rows(table)
    assert list(rows) == ["original.onnx", "original", "distill", "distill.onnx", INT8]  # the results' order
    assert rows["original"] == ["original", "torch", "fp32", "-", "torch", "local", "1", "0.7500", "-", "-",
                                "0.500 MB", "1.23M", "2.00G", "4.000", "5.000", "5.000", "10"]
    assert rows["distill"][11:13] == ["999", "500.00M"]
    # int8 share as a percentage; agreement 0.0 is a number, not "-"; parity cosine to 4 places
    assert rows[INT8] == [INT8, "onnx", "int8", "88%", "onnxruntime", "local", "1", "0.5000", "0.0000",
                          "ok cos 0.9987", "0.075 MB", "-", "-", "0.250", "0.312", "0.312", "10"]
    assert rows["distill.onnx"][8] == "1.0000"


def test_sizes_and_counts_switch_units_at_their_boundaries():
    data = results_dict()
    by_name = {a["name"]: a for a in data["artifacts"]}
    by_name["original"].update(size_bytes=9_999_999, params=1000, macs=999)
    by_name["distill"].update(size_bytes=10_000_000, params=1_000_000_000)
    rows = _rows(render_table(build(data)))
    assert rows["original"][10:13] == ["10.000 MB", "1.00k", "999"]
    assert rows["distill"][10:12] == ["10.0 MB", "1.00G"]


def test_summary_lines_gates_and_what_went_wrong_are_listed_under_the_table():
    data = _with_details()
    measurement(data, INT8)["parity"] = _parity(False, 0.5, ["cosine 0.50000 < 0.99", "top-1 agreement 0.9000 < 0.98"])
    measurement(data, "distill").update(status="timeout", error="no answer in 60 s", latency=None, metric={})
    measurement(data, "original.onnx").update(status="skipped", error="not on this target", latency=None)
    data["refusals"] = [
        {"artifact": "original", "format": "tflite", "stage": "export.tflite", "op": "aten.linalg_inv",
         "reason": "the converter has no kernel for it"},
        {"artifact": "distill", "format": "openvino", "stage": "quantize.openvino", "reason": "no calibration data"}]
    results = build(data)
    results.summary = {"final_macs_ratio": 0.25, "gates": [
        {"gate": "max_size_mb", "passed": True, "message": "0.075 MB <= 1 MB"},
        {"gate": "min_speedup", "passed": False, "message": "1.2x < 2x"}]}
    table = render_table(results)
    rows = _rows(table)
    assert rows[INT8][9] == "FAIL"
    # a measurement with no latency shows its status where its p50 would be, and dashes after it
    assert rows["distill"][7:] == ["-", "-", "-", "0.250 MB", "999", "500.00M", "timeout", "-", "-", "-"]
    after = table[table.rindex("┘") + 1:].strip().splitlines()
    assert after == [
        "final_macs_ratio: 0.25",
        "GATE ok   max_size_mb: 0.075 MB <= 1 MB",
        "GATE FAIL min_speedup: 1.2x < 2x",
        f"PARITY FAILED {INT8} on onnxruntime (local) against distill: cosine 0.50000 < 0.99; "
        "top-1 agreement 0.9000 < 0.98",
        "REFUSED tflite for original at export.tflite (operator aten.linalg_inv): the converter has no kernel for it",
        "REFUSED openvino for distill at quantize.openvino: no calibration data",
        "INCOMPLETE distill on torch (local): timeout: no answer in 60 s",  # skipped is not incomplete
    ]
    assert table.endswith("\n") and not table.endswith("\n\n")


def test_a_complete_run_lists_nothing_under_the_table_but_its_summary():
    results = build()
    results.summary = {"final_top1_delta_points": 0.0}
    table = render_table(results)
    assert table[table.rindex("┘") + 1:].strip() == "final_top1_delta_points: 0.0"
    assert "\nINCOMPLETE" not in table and "PARITY FAILED" not in table and "REFUSED" not in table


def test_the_table_is_never_cut_to_a_terminal_width():
    data = results_dict()
    long_name = "a-very-long-artifact-name-" * 8
    data["artifacts"][0]["name"] = long_name
    measurement(data, "original")["artifact"] = long_name
    table = render_table(build(data))
    assert long_name in _rows(table)  # whole, on one line
    assert "…" not in table


# --- summarize ---------------------------------------------------------------------------------------

def test_summary_figures_are_the_ratios_of_the_recorded_numbers():
    data = _with_details()
    summary = summarize(build(data))
    assert summary == {
        "final_macs_ratio": 0.25,  # 500M of 2G MACs
        "final_top1_delta_points": 0.0,  # distill 0.75 vs original 0.75 on torch
        f"{INT8}_size_ratio_vs_fp32": 3.33,  # 250 kB / 75 kB
        f"{INT8}_top1_delta_points_vs_fp32": -25.0,  # 0.50 vs 0.75 on onnxruntime
        f"{INT8}_speedup_p50_vs_fp32_onnxruntime_1t": 2.0,  # 0.5 ms / 0.25 ms
    }


def test_summary_compares_int8_only_with_its_parent_on_the_same_runtime_and_threads():
    data = results_dict()
    int8 = measurement(data, INT8)
    int8["threads"] = 2  # its fp32 parent was measured with 1 thread only: nothing to compare with
    summary = summarize(build(data))
    assert f"{INT8}_size_ratio_vs_fp32" in summary
    assert not [key for key in summary if "delta_points_vs_fp32" in key or "speedup" in key]


def test_summary_of_a_run_with_only_the_original_compares_nothing():
    data = results_dict()
    data["artifacts"] = data["artifacts"][:1]
    data["measurements"] = [measurement(data, "original")]
    assert summarize(build(data)) == {}


@pytest.mark.parametrize("field", ["size", "p50"])
def test_a_zero_size_or_zero_p50_leaves_its_ratio_out_instead_of_crashing(field):
    data = results_dict()
    if field == "size":
        next(a for a in data["artifacts"] if a["name"] == INT8)["size_bytes"] = 0
    else:
        measurement(data, INT8)["latency"].update(p50_ms=0.0, p90_ms=0.0, p99_ms=0.0, min_ms=0.0, max_ms=0.0,
                                                   mean_ms=0.0)
    results = build(data)
    summary = summarize(results)
    assert (f"{INT8}_size_ratio_vs_fp32" in summary) == (field != "size")
    assert (f"{INT8}_speedup_p50_vs_fp32_onnxruntime_1t" in summary) == (field != "p50")
    assert summary[f"{INT8}_top1_delta_points_vs_fp32"] == -25.0  # the rest is still reported
    results.summary = summary
    rows = _rows(render_table(results))
    assert rows[INT8][10] == ("0.000 MB" if field == "size" else "0.075 MB")


def test_summary_names_every_failed_parity_and_a_failed_fp32_measurement_is_not_a_reference():
    data = results_dict()
    measurement(data, INT8)["parity"] = _parity(False, 0.1, ["outputs are not finite (3 of 10 samples)"])
    measurement(data, "distill.onnx").update(status="failed", error="crashed", latency=None)
    summary = summarize(build(data))
    assert summary["parity_failures"] == [
        f"{INT8} on onnxruntime (local, 1t): outputs are not finite (3 of 10 samples)"]
    assert not [key for key in summary if "vs_fp32" in key and "size" not in key]
