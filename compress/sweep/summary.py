"""The terminal's summary of a sweep: one row per trial, the Pareto set marked, in 120 columns."""

from __future__ import annotations

import io
from typing import Any


def _cell(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def render_sweep(record: dict[str, Any], width: int = 120) -> str:
    from rich.console import Console
    from rich.table import Table, box

    metric = record["objectives"]["metric"]
    pareto, feasible_front = set(record.get("pareto", [])), set(record.get("pareto_feasible", []))
    names = list(record["parameters"])
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ["trial", *[n.rsplit(".", 1)[-1] for n in names], "status", metric, "drop", "ms", "MB", "Pareto"]:
        table.add_column(column, overflow="fold")
    for trial in record["trials"]:
        point = trial.get("objectives") or {}
        mark = "best" if trial["id"] in feasible_front else "front" if trial["id"] in pareto else ""
        status = trial["status"] if trial["status"] != "ok" else "ok" if trial.get("feasible") else "over"
        table.add_row(str(trial["id"]), *[_cell(trial["parameters"].get(n)) for n in names], status,
                      _cell(point.get("metric")), _cell(point.get("drop"), 3), _cell(point.get("latency_ms"), 3),
                      _cell(point.get("size_mb"), 3), mark)
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(table)
    import textwrap

    lines = [line.rstrip() for line in textwrap.dedent(console.export_text()).splitlines() if line.strip()]
    lines.append(f"{sum(t['status'] == 'ok' for t in record['trials'])} of {len(record['trials'])} trials finished; "
                 f"Pareto set: trials {sorted(pareto)}; on it and meeting the constraints (best): "
                 f"{sorted(feasible_front) or 'none'}")
    if any(t["status"] == "ok" and not t.get("feasible") for t in record["trials"]):
        lines.append("status over: finished, outside a constraint (sweep.json names which)")
    return "\n".join(part for line in lines for part in textwrap.wrap(line, width=width, subsequent_indent="  ")
                     or [""]) + "\n"
