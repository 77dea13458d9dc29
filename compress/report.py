"""What a person reads: the results table and a few headline comparisons."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from compress.results import BELOW_FP32

if TYPE_CHECKING:
    from compress.results import Measurement, Results


def _mb(size: int) -> str:
    return f"{size / 1e6:.3f} MB" if size < 10e6 else f"{size / 1e6:.1f} MB"


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _parity_cell(m: Measurement) -> str:
    if m.parity is None:
        return "-"
    return f"ok cos {m.parity.cosine:.4f}" if m.parity.passed else "FAIL"


def render_table(results: Results) -> str:
    from rich.console import Console
    from rich.table import Table

    metric = results.task.get("metric", "metric")
    table = Table(title=f"{results.recipe_name} · run {results.run_id}")
    for column in ("artifact", "format", "precision", "int8 MACs", "runtime", "target", "threads", metric, "agreement",
                   "parity", "size", "params", "MACs", "p50 ms", "p90 ms", "p99 ms", "runs"):
        numeric = column not in ("artifact", "format", "precision", "runtime", "target")

        table.add_column(column, justify="right" if numeric else "left")
    for m in results.measurements:
        artifact = results.artifact(m.artifact)
        lat = m.latency
        share = artifact.info.get("int8_macs_share")
        row = [m.artifact, artifact.format, artifact.precision, "-" if share is None else f"{share:.0%}",
               m.runtime, m.target, str(m.threads),
               f"{m.metric[metric]:.4f}" if metric in m.metric else "-",
               f"{m.agreement:.4f}" if m.agreement is not None else "-",
               _parity_cell(m),
               _mb(artifact.size_bytes), _count(artifact.params), _count(artifact.macs),
               f"{lat.p50_ms:.3f}" if lat else m.status, f"{lat.p90_ms:.3f}" if lat else "-",
               f"{lat.p99_ms:.3f}" if lat else "-", str(lat.runs) if lat else "-"]
        table.add_row(*row)
    # As wide as the table needs: table.txt is a file, nothing in it is cut to fit a terminal.
    width = Console(width=100_000, file=io.StringIO()).measure(table).maximum
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(table)
    lines = [console.export_text()]
    for key, value in results.summary.items():
        if key == "gates":
            lines.extend(_gate_lines(value))
        else:
            lines.append(f"{key}: {value}")
    lines.extend(_problems(results))
    return "\n".join(lines).rstrip() + "\n"


def _gate_lines(checks: list[dict[str, Any]]) -> list[str]:
    return [f"GATE {'ok  ' if c['passed'] else 'FAIL'} {c['gate']}: {c['message']}" for c in checks]


def _problems(results: Results) -> list[str]:
    """Every parity failure, refusal and failed measurement, one line each."""
    lines: list[str] = []
    for m in results.measurements:
        if m.parity is not None and not m.parity.passed:
            lines.append(f"PARITY FAILED {m.artifact} on {m.runtime} ({m.target}) against {m.parity.reference}: "
                         + "; ".join(m.parity.failures))
    for refusal in results.refusals:
        lines.append(f"REFUSED {refusal.format} for {refusal.artifact} at {refusal.stage}"
                     + (f" (operator {refusal.op})" if refusal.op else "") + f": {refusal.reason}")
    failed = [m for m in results.measurements if m.status not in ("ok", "skipped")]
    for m in failed:
        lines.append(f"INCOMPLETE {m.artifact} on {m.runtime} ({m.target}): {m.status}: {m.error}")
    return lines


def render_summary(results: Results, width: int = 120) -> str:
    """The terminal's summary: one row per measurement in at most `width` columns, the gates and
    every problem; the full table is table.txt and report.html."""
    from rich.console import Console
    from rich.table import Table, box

    metric = results.task.get("metric", "metric")
    targets = {(m.target, m.threads) for m in results.measurements}
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    columns = ["artifact", "runtime"] + (["target", "threads"] if len(targets) > 1 else []) + [
        "precision", metric, "agreement", "parity", "size", "p50 ms", "vs fp32"]
    # an artifact's name is what a person looks for: kept whole on its line (up to 48 characters),
    # the other columns give way
    longest = min(48, max((len(m.artifact) for m in results.measurements), default=8))
    for column in columns:
        table.add_column(column, justify="left" if column in ("artifact", "runtime", "target", "precision")
                         else "right", overflow="fold", min_width=longest if column == "artifact" else None)
    for m in results.measurements:
        artifact = results.artifact(m.artifact)
        speedup = results.summary.get(f"{m.artifact}_speedup_p50_vs_fp32_{m.runtime}_{m.threads}t")
        row = [m.artifact, m.runtime] + ([m.target, str(m.threads)] if len(targets) > 1 else []) + [
            artifact.precision, f"{m.metric[metric]:.4f}" if metric in m.metric else "-",
            f"{m.agreement:.4f}" if m.agreement is not None else "-",
            "-" if m.parity is None else "ok" if m.parity.passed else "FAIL", _mb(artifact.size_bytes),
            f"{m.latency.p50_ms:.3f}" if m.latency else m.status, "-" if speedup is None else f"{speedup:.2f}x"]
        table.add_row(*row)
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(table)
    import textwrap

    lines = [line.rstrip() for line in textwrap.dedent(console.export_text()).splitlines() if line.strip()]
    lines.extend(_gate_lines([c for c in results.summary.get("gates", []) if not c["passed"]]))
    lines.extend(_problems(results))
    wrapped = [part for line in lines for part in (
        [line] if len(line) <= width else textwrap.wrap(line, width=width, subsequent_indent="  "))]
    return "\n".join(wrapped) + "\n"


def _first(results: Results, artifact: str, runtime: str | None = None) -> Measurement | None:
    for m in results.measurements:
        if m.artifact == artifact and m.status == "ok" and (runtime is None or m.runtime == runtime):
            return m
    return None


def summarize(results: Results) -> dict[str, Any]:
    """Headline comparisons: what pruning, distillation and int8 each cost and bought."""
    metric = results.task.get("metric", "metric")
    summary: dict[str, Any] = {}
    by_name = {a.name: a for a in results.artifacts}
    torch_chain = [a for a in results.artifacts if a.format == "torch"]
    original, final = torch_chain[0], torch_chain[-1]
    if final is not original and original.macs and final.macs:
        summary["final_macs_ratio"] = round(final.macs / original.macs, 4)
    base, last = _first(results, original.name, "torch"), _first(results, final.name, "torch")
    if final is not original and base and last and metric in base.metric and metric in last.metric:
        summary[f"final_{metric}_delta_points"] = round(100 * (last.metric[metric] - base.metric[metric]), 2)
    for artifact in results.artifacts:
        if artifact.precision not in BELOW_FP32 or artifact.parent is None:
            continue
        parent = next((a for a in by_name.values() if a.id == artifact.parent), None)
        if parent is None:
            continue
        key = artifact.name
        if artifact.size_bytes > 0:  # a ratio to an empty file means nothing: left out, never a crash
            summary[f"{key}_size_ratio_vs_fp32"] = round(parent.size_bytes / artifact.size_bytes, 2)
        search = artifact.info.get("accuracy_aware")
        if search:
            summary[f"{key}_kept_in_float"] = search["kept_in_float"]
        for m in results.measurements:
            if m.artifact != key or m.status != "ok":
                continue
            fp32 = next((p for p in results.measurements if p.artifact == parent.name and p.runtime == m.runtime
                         and p.target == m.target and p.threads == m.threads and p.status == "ok"), None)
            if fp32 is None:
                continue
            if metric in m.metric and metric in fp32.metric:
                summary[f"{key}_{metric}_delta_points_vs_fp32"] = round(
                    100 * (m.metric[metric] - fp32.metric[metric]), 2)
            if m.latency and fp32.latency and m.latency.p50_ms > 0:  # a 0 ms p50 (a coarse clock) has no ratio
                summary[f"{key}_speedup_p50_vs_fp32_{m.runtime}_{m.threads}t"] = round(
                    fp32.latency.p50_ms / m.latency.p50_ms, 2)
    failures = [f"{m.artifact} on {m.runtime} ({m.target}, {m.threads}t): {'; '.join(m.parity.failures)}"
                for m in results.measurements if m.parity is not None and not m.parity.passed]
    if failures:
        summary["parity_failures"] = failures
    return summary
