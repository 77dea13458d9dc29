"""report.html and the terminal summary: what a person reads, checked against results.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compress.html_report import run_report, sweep_report, write_report
from compress.pareto import pareto_front
from compress.report import render_summary
from compress.results import Results
from tests.conftest import printed_run, small_recipe

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).is_file()), None)


def _results(measurements: list[dict], artifacts: list[dict] | None = None, **extra) -> Results:
    artifacts = artifacts or [
        {"name": "original", "id": "a", "format": "torch", "precision": "fp32", "path": "x", "sha256": "0",
         "size_bytes": 4_000_000, "lineage": []},
        {"name": "small.int8.onnx", "id": "b", "format": "onnx", "precision": "int8", "path": "y", "sha256": "0",
         "size_bytes": 1_000_000, "lineage": ["a"], "parent": "a"}]
    return Results.model_validate({
        "compress_version": "0", "run_id": "r1", "recipe": "/r.yaml", "recipe_name": "demo", "started": "s",
        "finished": "f", "status": "complete", "task": {"metric": "top1", "lower_is_better": False},
        "data": {}, "stages": [{"name": "original", "artifact": "original", "cached": False, "seconds": 1.5}],
        "artifacts": artifacts, "measurements": measurements, "versions": {}, **extra})


def _m(artifact: str, runtime: str, top1: float | None, p50: float | None, status: str = "ok") -> dict:
    latency = None if p50 is None else {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50, "min_ms": p50,
                                        "max_ms": p50, "runs": 10, "seconds": 1.0, "throughput_per_s": 1.0,
                                        "batch_size": 1, "threads": 1, "warmup": 1}
    return {"artifact": artifact, "runtime": runtime, "target": "local", "threads": 1, "status": status,
            "metric": {} if top1 is None else {"top1": top1}, "latency": latency}


def test_pareto_front_matches_a_brute_force_count():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(30):
        points = rng.integers(0, 5, size=(12, 3)).astype(float)  # ties and duplicates on purpose
        points[rng.integers(0, 12)] = [np.nan, 0, 0]  # a missing objective is never on the front
        front = set(pareto_front(points.tolist()))
        for i, p in enumerate(points):
            if np.isnan(p).any():
                assert i not in front
                continue
            others = np.delete(points, i, axis=0)
            others = others[~np.isnan(others).any(axis=1)]
            dominated = bool(((others <= p).all(axis=1) & (others < p).any(axis=1)).any())
            assert (i in front) == (not dominated), (points.tolist(), i)


def test_summary_fits_120_columns_and_keeps_every_problem():
    long_error = "the agent died: " + "x" * 300
    results = _results([_m("original", "torch", 0.99, 0.0), _m("small.int8.onnx", "onnxruntime", 0.98, 0.5),
                        _m("small.int8.onnx", "openvino", None, None, status="timeout") | {"error": long_error}])
    text = render_summary(results)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert any(line.split()[:2] == ["original", "torch"] and "0.9900" in line for line in lines)
    assert any(line.startswith("INCOMPLETE small.int8.onnx on openvino (local): timeout") for line in lines)
    assert "x" * 100 in text.replace("\n  ", "")  # wrapped, not cut
    # a p50 of 0 ms (a coarse clock) shows, it does not divide
    assert "0.000" in next(line for line in lines if line.startswith("original"))


def test_summary_keeps_each_long_artifact_name_whole_on_its_row():
    names = ["original.int4_weights.openvino", "distill.int4_weights.onnx", "original.fp16.tflite"]
    artifacts = [{"name": "original", "id": "a", "format": "torch", "precision": "fp32", "path": "x", "sha256": "0",
                  "size_bytes": 4_000_000, "lineage": []}] + [
        {"name": name, "id": name, "format": name.rsplit(".", 1)[1], "precision": name.split(".")[1], "path": "y",
         "sha256": "0", "size_bytes": 1_000_000, "lineage": ["a"], "parent": "a"} for name in names]
    results = _results([_m(name, runtime, 0.98123, 12.5) for name in names
                        for runtime in ("onnxruntime", "openvino")], artifacts=artifacts)
    lines = render_summary(results).splitlines()
    assert max(len(line) for line in lines) <= 120
    for name in names:
        rows = [line for line in lines if line.startswith(name + " ")]
        assert len(rows) == 2 and all("int4_weights" in r or "fp16" in r for r in rows), lines
        assert all("0.9812" in r and "12.500" in r for r in rows), rows


def test_html_escapes_what_it_shows_and_counts_points_independently():
    hostile = "</script><img src=x onerror=alert(1)>"
    results = _results([_m("original", "torch", 0.99, 2.0), _m("small.int8.onnx", "onnxruntime", 0.97, 0.5),
                        _m("small.int8.onnx", "openvino", 0.98, 0.7), _m("small.int8.onnx", "litert", None, 0.1)],
                       refusals=[{"artifact": "original", "format": "tflite", "stage": "export.tflite",
                                  "reason": hostile}])
    page = run_report(results)
    assert hostile not in page and "&lt;/script&gt;&lt;img" in page
    data = json.loads(page.split('id="report-data">')[1].split("</script>")[0].replace("<\\/", "</"))
    assert data["rows"] == 4
    # plotted: finished measurements with a metric; the one without top1 is left out
    assert data["points"] == {"plot-accuracy-latency": 3, "plot-accuracy-size": 3}
    assert page.count('class="plotly-graph-div"') == 3  # the two trade-offs and the step timings


def test_report_command_refuses_a_folder_without_results(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path}: neither results.json (a run) nor sweep.json (a sweep) is in this folder"]
    (tmp_path / "results.json").write_text('{"schema_version": 1, "oops": ')
    result = cli("report", tmp_path)
    assert result.exit_code == 2 and "not a results.json compress can read" in result.stderr
    assert not (tmp_path / "report.html").exists()


def _open_in_chromium(page_path: Path) -> dict:
    """Rows of the results table, points per plot and the page's errors, read in a real browser."""
    if CHROMIUM is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: errors.append(f"fetched {request.url}")
                if not request.url.startswith(("file:", "data:", "about:")) else None)
        page.goto(page_path.as_uri())
        page.wait_for_function("document.getElementById('plot-accuracy-size') && "
                               "document.getElementById('plot-accuracy-size').data !== undefined")
        seen = page.evaluate("""() => ({
            rows: document.querySelectorAll('#results-table tbody tr').length,
            points: Object.fromEntries(['plot-accuracy-latency', 'plot-accuracy-size'].map(id =>
                [id, document.getElementById(id).data[0].x.length])),
            front: document.getElementById('plot-accuracy-latency').data[1].x.length})""")
        # sorting by a column really reorders the rows
        heading = page.locator("#results-table th", has_text="p50 ms").first
        if heading.count():
            heading.click()
            column = page.evaluate("""() => { const ths = Array.from(document.querySelectorAll('#results-table th'));
                const i = ths.findIndex(th => th.textContent === 'p50 ms');
                return Array.from(document.querySelectorAll('#results-table tbody tr'))
                    .map(r => parseFloat(r.cells[i].dataset.value ?? 'NaN')).filter(v => !isNaN(v)); }""")
            seen["sorted"] = column
        browser.close()
    seen["errors"] = errors
    return seen


@pytest.mark.slow
@pytest.mark.browser
def test_run_report_opens_in_a_browser_and_matches_results_json(cli, write_recipe, tmp_path):
    recipe = write_recipe(small_recipe())
    result = cli("run", recipe, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.stderr
    folder = printed_run(result.stdout)
    assert f"report: {folder / 'report.html'}" in result.stdout
    results = json.loads((folder / "results.json").read_text())
    seen = _open_in_chromium(folder / "report.html")
    assert seen["errors"] == []
    assert seen["rows"] == len(results["measurements"])
    plotted = [m for m in results["measurements"] if m["status"] == "ok" and "top1" in m["metric"]]
    assert seen["points"] == {"plot-accuracy-latency": len(plotted), "plot-accuracy-size": len(plotted)}
    # the front plotted is the brute-force front of (p50, -top1)
    points = [(m["latency"]["p50_ms"], -m["metric"]["top1"]) for m in plotted]
    dominated = [any(o[0] <= p[0] and o[1] <= p[1] and o != p for o in points) for p in points]
    assert seen["front"] == dominated.count(False)
    assert seen["sorted"] == sorted(seen["sorted"]) and len(seen["sorted"]) == len(results["measurements"])
    # `compress report` rewrites the same page from results.json alone
    before = (folder / "report.html").read_text()
    (folder / "report.html").unlink()
    again = cli("report", folder)
    assert again.exit_code == 0 and (folder / "report.html").read_text() == before


@pytest.mark.slow
@pytest.mark.browser
def test_sweep_report_opens_in_a_browser(tmp_path):
    record = {"name": "demo", "strategy": "grid", "parameters": {"quantize.calibration.method": ["minmax", "entropy"]},
              "objectives": {"metric": "top1", "lower_is_better": False, "target": "local"},
              "pareto": [0], "pareto_feasible": [0], "trials": [
                  {"id": 0, "parameters": {"quantize.calibration.method": "minmax"}, "status": "ok", "feasible": True,
                   "objectives": {"metric": 0.9, "latency_ms": 0.1, "size_mb": 0.2, "drop": 0.01}, "run": "a"},
                  {"id": 1, "parameters": {"quantize.calibration.method": "entropy"}, "status": "ok",
                   "feasible": False, "objectives": {"metric": 0.8, "latency_ms": 0.2, "size_mb": 0.3, "drop": 0.1},
                   "run": "b"},
                  {"id": 2, "parameters": {"quantize.calibration.method": "<b>x</b>"}, "status": "failed",
                   "error": "boom", "objectives": None, "run": None}]}
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    write_report(tmp_path, record)
    assert "<b>x</b>" not in (tmp_path / "report.html").read_text()
    seen = _open_in_chromium(tmp_path / "report.html")
    assert seen["errors"] == []
    assert seen["rows"] == 3
    assert seen["points"] == {"plot-accuracy-latency": 2, "plot-accuracy-size": 2}
    assert seen["front"] == 1
    assert sweep_report(record).count('class="plotly-graph-div"') == 2


def test_no_chromium_is_a_skip_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(f"{__name__}.CHROMIUM", None)
    with pytest.raises(pytest.skip.Exception, match="no chromium here"):
        _open_in_chromium(tmp_path / "report.html")
    assert shutil.which("true")  # the module's helpers import nothing heavy at collection
