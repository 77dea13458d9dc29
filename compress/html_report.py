"""report.html: one self-contained page a person reads, offline (plotly.js and the data embedded).

For a run: the results table (sortable), accuracy-latency and accuracy-size plots with the Pareto
front, the time each step took, parity and the gates. For a sweep: every trial, the same two plots
over the trials, and which trials met the constraints. Charts are plotly figures; only the table
and its sorting are written here.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.pareto import pareto_front

if TYPE_CHECKING:
    from compress.results import Results

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0;cursor:pointer;user-select:none}
td.text,th.text{text-align:left}
.fail{color:#b00;font-weight:bold}.ok{color:#070}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots>div{flex:1 1 520px;min-width:420px}
"""

# Sorting the table by a column (click a heading; again to reverse): numbers as numbers.
_SORT = """
for (const table of document.querySelectorAll('table.sortable')) {
  table.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
    const key = r => { const t = r.cells[col].dataset.value ?? r.cells[col].textContent;
                       const n = parseFloat(t); return isNaN(n) ? t : n; };
    rows.sort((a, b) => { const x = key(a), y = key(b);
      const c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return asc ? c : -c; });
    rows.forEach(r => body.appendChild(r));
  }));
}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(table_id: str, columns: list[str], rows: list[list[Any]], text_columns: set[str]) -> str:
    head = "".join(f'<th class="{"text" if c in text_columns else "num"}">{_e(c)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = []
        for column, value in zip(columns, row, strict=True):
            cls = "text" if column in text_columns else "num"
            if value in ("FAIL", "failed", "timeout", "no"):
                cls += " fail"
            shown = "-" if value is None else f"{value:.4g}" if isinstance(value, float) else value
            sort_value = "" if value is None else f' data-value="{_e(value)}"'
            cells.append(f'<td class="{cls}"{sort_value}>{_e(shown)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="{_e(table_id)}" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _scatter(div_id: str, title: str, points: list[dict[str, Any]], x_title: str, y_title: str,
             lower_is_better: bool, first: bool) -> str:
    """Every point, and the Pareto front over (x lower is better, y per the metric's direction)."""
    import plotly.graph_objects as go

    front = pareto_front([(p["x"], p["y"] if lower_is_better else -p["y"]) for p in points])
    on_front = sorted((points[i] for i in front), key=lambda p: p["x"])
    figure = go.Figure()
    figure.add_trace(go.Scatter(name="all", mode="markers", x=[p["x"] for p in points], y=[p["y"] for p in points],
                                text=[p["label"] for p in points], hovertemplate="%{text}<br>%{x}, %{y}<extra></extra>",
                                marker={"size": 9, "color": ["#d62728" if p.get("failed") else "#1f77b4"
                                                             for p in points]}))
    figure.add_trace(go.Scatter(name="Pareto front", mode="lines+markers", x=[p["x"] for p in on_front],
                                y=[p["y"] for p in on_front], text=[p["label"] for p in on_front],
                                hovertemplate="%{text}<extra>Pareto</extra>", line={"dash": "dot", "color": "#2ca02c"},
                                marker={"size": 12, "symbol": "circle-open", "color": "#2ca02c"}))
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=420,
                         margin={"l": 60, "r": 20, "t": 50, "b": 50}, template="plotly_white")
    return figure.to_html(full_html=False, include_plotlyjs=first, div_id=div_id)


def _plots(metric: str, latency: list[dict[str, Any]], size: list[dict[str, Any]], lower: bool) -> str:
    """The two trade-off plots side by side; the first carries plotly.js for the whole page."""
    by_latency = _scatter("plot-accuracy-latency", f"{metric} vs p50 latency", latency, "p50 ms", metric, lower, True)
    by_size = _scatter("plot-accuracy-size", f"{metric} vs size", size, "size MB", metric, lower, False)
    return f'<h2>Accuracy, latency and size</h2><div class="plots"><div>{by_latency}</div><div>{by_size}</div></div>'


def _page(title: str, sections: list[str], data: dict[str, Any]) -> str:
    # the data the page shows, as JSON a reader (or a test) can take back; "</" cannot end the script
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}"
            f'<script type="application/json" id="report-data">{payload}</script>'
            f"<script>{_SORT}</script></body></html>")


def _points(results: Results, x_of: str) -> list[dict[str, Any]]:
    metric = results.task.get("metric", "metric")
    points = []
    for m in results.measurements:
        if m.status != "ok" or metric not in m.metric or not math.isfinite(m.metric[metric]):
            continue
        artifact = results.artifact(m.artifact)
        if x_of == "latency" and m.latency is None:
            continue
        x = m.latency.p50_ms if x_of == "latency" and m.latency else artifact.size_bytes / 1e6
        points.append({"x": x, "y": m.metric[metric], "label": f"{m.artifact} on {m.runtime} ({m.target}, "
                       f"{m.threads}t)", "failed": m.parity is not None and not m.parity.passed})
    return points


def run_report(results: Results) -> str:
    import plotly.graph_objects as go

    metric = results.task.get("metric", "metric")
    lower = bool(results.task.get("lower_is_better", False))
    columns = ["artifact", "format", "precision", "runtime", "target", "threads", metric, "agreement", "parity",
               "cosine", "size MB", "params", "MACs", "p50 ms", "p90 ms", "p99 ms", "runs", "status"]
    rows = []
    for m in results.measurements:
        a = results.artifact(m.artifact)
        rows.append([m.artifact, a.format, a.precision, m.runtime, m.target, m.threads, m.metric.get(metric),
                     m.agreement, None if m.parity is None else "ok" if m.parity.passed else "FAIL",
                     None if m.parity is None else m.parity.cosine, round(a.size_bytes / 1e6, 4), a.params, a.macs,
                     m.latency.p50_ms if m.latency else None, m.latency.p90_ms if m.latency else None,
                     m.latency.p99_ms if m.latency else None, m.latency.runs if m.latency else None, m.status])
    text = {"artifact", "format", "precision", "runtime", "target", "parity", "status"}
    sections = [f"<p>recipe <b>{_e(results.recipe_name)}</b> · run {_e(results.run_id)} · status "
                f'<b class="{"ok" if results.status == "complete" else "fail"}">{_e(results.status)}</b> · '
                f"{_e(results.started)} → {_e(results.finished)} · compress {_e(results.compress_version)}</p>",
                "<h2>Results</h2>", _table("results-table", columns, rows, text)]
    latency, size = _points(results, "latency"), _points(results, "size")
    sections.append(_plots(metric, latency, size, lower))
    steps = go.Figure(go.Bar(x=[s.seconds for s in results.stages], y=[s.name for s in results.stages],
                             orientation="h",
                             text=["cached" if s.cached else f"{s.seconds:.1f} s" for s in results.stages]))
    steps.update_layout(title="time per step (s)", height=max(240, 26 * len(results.stages) + 90),
                        margin={"l": 200, "r": 20, "t": 50, "b": 40}, template="plotly_white",
                        yaxis={"autorange": "reversed"})
    sections.append("<h2>Steps</h2>" + steps.to_html(full_html=False, include_plotlyjs=False, div_id="plot-steps"))
    parity_rows = [[m.artifact, m.runtime, m.target, m.parity.reference, m.parity.max_abs_error, m.parity.cosine,
                    m.parity.agreement, "ok" if m.parity.passed else "FAIL", "; ".join(m.parity.failures)]
                   for m in results.measurements if m.parity is not None]
    sections.append("<h2>Parity</h2>" + _table(
        "parity-table", ["artifact", "runtime", "target", "against", "max abs error", "cosine", "top-1 agreement",
                         "passed", "failures"], parity_rows, {"artifact", "runtime", "target", "against", "passed",
                                                              "failures"}))
    gates = results.summary.get("gates")
    if gates is not None:
        sections.append("<h2>Gates</h2>" + _table("gates-table", ["gate", "passed", "message"],
                                                  [[c["gate"], "ok" if c["passed"] else "FAIL", c["message"]]
                                                   for c in gates], {"gate", "passed", "message"}))
    problems = [f"{r.format} refused for {r.artifact} at {r.stage}: {r.reason}" for r in results.refusals]
    problems += [b["message"] for b in results.accuracy_budget if not b["met"]]
    problems += [f"{m.artifact} on {m.runtime} ({m.target}): {m.status}: {m.error}" for m in results.measurements
                 if m.status not in ("ok", "skipped")]
    if problems:
        sections.append("<h2>Problems</h2><ul>" + "".join(f'<li class="fail">{_e(p)}</li>' for p in problems)
                        + "</ul>")
    data = {"kind": "run", "rows": len(rows), "points": {"plot-accuracy-latency": len(latency),
                                                         "plot-accuracy-size": len(size)}}
    return _page(f"compress · {results.recipe_name} · {results.run_id}", sections, data)


def sweep_report(sweep: dict[str, Any]) -> str:
    objectives = sweep.get("objectives", {})
    metric = objectives.get("metric", "metric")
    lower = bool(objectives.get("lower_is_better", False))
    parameters = list(sweep.get("parameters", {}))
    columns = ["trial", *parameters, "status", metric, "drop", "p50 ms", "size MB", "meets constraints", "Pareto",
               "run"]
    pareto = set(sweep.get("pareto", []))
    rows, latency, size = [], [], []
    for trial in sweep.get("trials", []):
        values = trial.get("objectives") or {}
        rows.append([trial["id"], *[json.dumps(trial["parameters"].get(p)) for p in parameters], trial["status"],
                     values.get("metric"), values.get("drop"), values.get("latency_ms"), values.get("size_mb"),
                     None if trial["status"] != "ok" else "yes" if trial.get("feasible") else "no",
                     "yes" if trial["id"] in pareto else "", trial.get("run") or ""])
        label = f"trial {trial['id']}: " + ", ".join(f"{k}={v}" for k, v in trial["parameters"].items())
        if values.get("metric") is not None and values.get("latency_ms") is not None:
            latency.append({"x": values["latency_ms"], "y": values["metric"], "label": label,
                            "failed": not trial.get("feasible")})
        if values.get("metric") is not None and values.get("size_mb") is not None:
            size.append({"x": values["size_mb"], "y": values["metric"], "label": label,
                         "failed": not trial.get("feasible")})
    text = {"status", "meets constraints", "Pareto", "run", *parameters}
    done = sum(t["status"] == "ok" for t in sweep.get("trials", []))
    sections = [f"<p>sweep <b>{_e(sweep.get('name', ''))}</b> · strategy {_e(sweep.get('strategy', ''))} · "
                f"{done} of {len(sweep.get('trials', []))} trials finished · {len(pareto)} on the Pareto front · "
                f"objective target {_e(objectives.get('target', ''))}</p>",
                "<h2>Trials</h2>", _table("results-table", columns, rows, text),
                _plots(metric, latency, size, lower)]
    data = {"kind": "sweep", "rows": len(rows), "points": {"plot-accuracy-latency": len(latency),
                                                           "plot-accuracy-size": len(size)}}
    return _page(f"compress sweep · {sweep.get('name', '')}", sections, data)


def write_report(folder: Path, sweep: dict[str, Any] | None = None) -> Path:
    """report.html for a run folder (from its results.json) or, given its record, a sweep folder;
    written atomically. The caller reads sweep.json (compress.sweep.record.read checks it)."""
    from compress.errors import InputError
    from compress.results import Results
    from compress.runtimes.files import write_atomic

    if sweep is not None:
        try:
            page = sweep_report(sweep)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"not a sweep record compress can read: {type(exc).__name__}: {exc}",
                             file=str(folder / "sweep.json")) from None
    elif (folder / "results.json").is_file():
        try:
            results = Results.model_validate_json((folder / "results.json").read_text())
        except ValueError as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"not a results.json compress can read: {first}", file=str(folder / "results.json")) \
                from None
        page = run_report(results)
    else:
        raise InputError("neither results.json (a run) nor sweep.json (a sweep) is in this folder", file=str(folder))
    path = folder / "report.html"
    write_atomic(path, page)
    return path
