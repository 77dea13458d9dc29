"""`compress gate` and `compress baseline`: stop a model change that loses accuracy or speed in CI.

Register both on the `compress` group with `register(main)`. Heavy imports stay inside the
commands so `compress --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from compress.errors import ExitCode
from compress.errors import exit_with as _fail

if TYPE_CHECKING:
    from compress.gates import Baseline, Check, GatesConfig
    from compress.results import Results

# Kept equal to compress.gates.Tolerances' defaults (a test checks), so --help needs no pydantic.
DEFAULT_TOLERANCES = {"metric": 0.005, "size": 0.02, "latency_ratio": 0.15}





# --- input -------------------------------------------------------------------------------------

def _read_text(file: Path, what: str) -> str:
    from compress.inputs import RESULTS_BYTES, read_text

    return read_text(file, what, RESULTS_BYTES)


def _invalid(exc: Any, model: type, file: Path, prefix: tuple[str | int, ...] = (), located: Any = None) -> NoReturn:
    """A pydantic ValidationError as one InputError naming the file, the line (for YAML) and the field."""
    from compress.errors import InputError
    from compress.recipe_yaml import format_path
    from compress.validation import first_error_message

    loc, message = first_error_message(exc, model)
    more = len(exc.errors()) - 1
    if more > 0:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    line = located.origin(prefix + loc).line if located is not None else None
    raise InputError(message, file=file, line=line, field=format_path(prefix + loc) or None) from None


def load_results(path: Path) -> Results:
    """results.json, or the run folder that holds it, validated against the schema."""
    from pydantic import ValidationError

    from compress.results import Results

    file = path / "results.json" if path.is_dir() else path
    text = _read_text(file, "results file")
    try:
        return Results.model_validate_json(text)
    except ValidationError as exc:
        _invalid(exc, Results, file)


def load_baseline(file: Path) -> Baseline:
    from pydantic import ValidationError

    from compress.gates import Baseline

    text = _read_text(file, "baseline file")
    try:
        return Baseline.model_validate_json(text)
    except ValidationError as exc:
        _invalid(exc, Baseline, file)


def load_gates(file: Path) -> GatesConfig:
    """A YAML mapping of GatesConfig keys, or a recipe whose top-level `gates:` section is used."""
    from pydantic import ValidationError

    from compress.errors import InputError
    from compress.gates import GatesConfig
    from compress.recipe_yaml import load_located_yaml

    located = load_located_yaml(file, "gates file")  # the safe loader, bounded, remembering lines
    data, prefix = located.data, ()
    if isinstance(data, dict) and "schema_version" in data and "gates" in data:
        data, prefix = data["gates"], ("gates",)  # a recipe: use its gates section
    if not isinstance(data, dict):
        raise InputError(f"a gates file is a mapping of {', '.join(GatesConfig.model_fields)}", file=file,
                         field=prefix[0] if prefix else None)
    try:
        gates = GatesConfig.model_validate(data)
    except ValidationError as exc:
        _invalid(exc, GatesConfig, file, prefix, located)
    if not gates.any_budget:
        raise InputError("sets no budget (max_accuracy_drop, max_size_mb, max_p90_ms or min_speedup)", file=file,
                         field=prefix[0] if prefix else None)
    return gates


# --- output ------------------------------------------------------------------------------------

def _report(checks: list[Check], results: Results, junit: Path | None, markdown: Path | None) -> None:
    from compress.ci_outputs import render_markdown, write_junit
    from compress.errors import InputError

    failed = [c for c in checks if not c.passed]
    skipped = [c for c in checks if c.skipped]
    for check in failed:
        click.echo(f"FAIL {check.gate}: {check.message}")
    for check in skipped:
        click.echo(f"SKIP {check.gate}: {check.message}")
    compared = len(checks) - len(skipped)
    not_compared = f", {len(skipped)} not compared" if skipped else ""
    if failed:
        click.echo(f"gate: {len(failed)} of {compared} checks failed, {compared - len(failed)} passed{not_compared}")
    else:
        click.echo(f"gate: all {compared} checks passed{not_compared}")
    title = f"compress gate · {results.recipe_name} · run {results.run_id}"
    try:
        if junit is not None:
            write_junit(checks, junit, suite_name=f"compress gate {results.recipe_name}")
        if markdown is not None:
            markdown.parent.mkdir(parents=True, exist_ok=True)
            with markdown.open("a", encoding="utf-8") as stream:  # appends, as $GITHUB_STEP_SUMMARY expects
                stream.write(render_markdown(checks, title) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", file=exc.filename) from None


# --- commands ----------------------------------------------------------------------------------

@click.command(name="gate")
@click.argument("results_path", metavar="RESULTS", type=click.Path(path_type=Path))
@click.option("--baseline", "baseline_file", type=click.Path(path_type=Path), metavar="BASELINE.json",
              help="Compare with this baseline (written by `compress baseline`).")
@click.option("--gates", "gates_file", type=click.Path(path_type=Path), metavar="GATES.yaml",
              help="Budgets: a YAML mapping of max_accuracy_drop, max_size_mb, max_p90_ms, min_speedup, "
                   "artifacts (or a recipe with a gates: section).")
@click.option("--metric-tolerance", type=click.FloatRange(min=0), default=DEFAULT_TOLERANCES["metric"],
              show_default=True, help="Baseline: absolute change of each metric allowed either way.")
@click.option("--size-tolerance", type=click.FloatRange(min=0), default=DEFAULT_TOLERANCES["size"],
              show_default=True, help="Baseline: relative change of each artifact's size allowed either way.")
@click.option("--latency-tolerance", type=click.FloatRange(min=0), default=DEFAULT_TOLERANCES["latency_ratio"],
              show_default=True,
              help="Baseline: relative change of each latency ratio (p50 / the reference's p50 in the same run).")
@click.option("--junit", type=click.Path(path_type=Path), metavar="PATH", help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(path_type=Path), metavar="PATH",
              help="Append a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY).")
def gate_command(results_path: Path, baseline_file: Path | None, gates_file: Path | None, metric_tolerance: float,
                 size_tolerance: float, latency_tolerance: float, junit: Path | None, markdown: Path | None) -> None:
    """Check a run (RESULTS: its folder or results.json) against budgets (--gates) and/or a baseline
    (--baseline). Prints one line per failing check and a summary.

    \b
    Exit codes:
      0  every check passed
      1  a gate failed (a budget exceeded, or a change beyond tolerance from the baseline,
         improvements included: update the baseline on purpose with `compress baseline`)
      2  bad input or usage (missing or invalid results, baseline or gates file; neither
         --gates nor --baseline given)
      3  the run is incomplete (a measurement crashed or timed out): never a pass
    """
    from compress.errors import CompressError, InputError
    from compress.gates import Tolerances, compare, completeness, evaluate, exit_code

    try:
        if gates_file is None and baseline_file is None:
            raise InputError("nothing to check: give --gates GATES.yaml and/or --baseline BASELINE.json")
        results = load_results(results_path)
        gates = load_gates(gates_file) if gates_file is not None else None
        baseline = load_baseline(baseline_file) if baseline_file is not None else None
        checks = evaluate(results, gates) if gates is not None else completeness(results)
        if baseline is not None:
            if baseline.recipe_name != results.recipe_name:
                click.echo(f"warning: the baseline is from recipe {baseline.recipe_name!r}, this run is "
                           f"{results.recipe_name!r}", err=True)
            tolerances = Tolerances(metric=metric_tolerance, size=size_tolerance, latency_ratio=latency_tolerance)
            checks += compare(results, baseline, tolerances)
        _report(checks, results, junit, markdown)
    except CompressError as exc:
        _fail(exc)
    code = exit_code(checks)
    failed = [c for c in checks if not c.passed]
    if code == ExitCode.INCOMPLETE:
        click.echo("error: the run is incomplete (a measurement failed or timed out): never a pass", err=True)
    elif failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        click.echo(f"error: gate failed: {failed[0].message}{more}", err=True)
    sys.exit(code)


@click.command(name="baseline")
@click.argument("results_path", metavar="RESULTS", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), metavar="BASELINE.json",
              help="Where to write it  [default: baselines/<recipe name>.json]")
@click.option("--artifacts", "artifact_globs", multiple=True, metavar="GLOB",
              help="Keep only these artifacts' measurements (repeatable; e.g. the ones you ship)  [default: all]")
def baseline_command(results_path: Path, out: Path | None, artifact_globs: tuple[str, ...]) -> None:
    """Write, or replace, the baseline that `compress gate --baseline` compares with, from a complete
    run (RESULTS: its folder or results.json). Latency is kept as a ratio to a reference measured in
    the same run, so a faster or slower CI machine does not move it; the kind of machine (CPU and its
    instruction sets, or GPU) is kept too, since the ratio of int8 to fp32 depends on it: on another
    kind the gate says the ratio was not compared.

    \b
    Exit codes:
      0  written
      2  bad input (missing or invalid results file)
      3  the run is incomplete (a measurement crashed or timed out): no baseline is written
    """
    from compress.errors import CompressError, InputError
    from compress.gates import IMPROVED_HINT, compare, completeness, make_baseline
    from compress.runtimes.files import write_atomic

    try:
        results = load_results(results_path)
    except CompressError as exc:
        _fail(exc)
    broken = [c for c in completeness(results) if not c.passed]
    if broken:
        click.echo(f"error: no baseline from an incomplete run: {broken[0].message}", err=True)
        sys.exit(ExitCode.INCOMPLETE)
    path = out if out is not None else Path("baselines") / f"{results.recipe_name}.json"
    document = make_baseline(results, list(artifact_globs) or None)
    if not document["entries"]:
        _fail(InputError(f"no measured artifact matches {' '.join(artifact_globs)}", field="--artifacts"))
    previous = None
    if path.is_file():
        try:
            previous = load_baseline(path)
        except CompressError:
            click.echo(f"warning: {path}: the previous baseline is not valid; replacing it", err=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        _fail(InputError(f"cannot write: {exc.strerror or exc}", file=path))
    if previous is not None:
        for check in compare(results, previous):
            if not check.passed:
                click.echo(f"changed: {check.message.replace(IMPROVED_HINT, 'improved')}")
    verb = "updated" if previous is not None else "wrote"
    click.echo(f"baseline: {verb} {path} ({len(document['entries'])} measurements from run {results.run_id})")


def register(group: click.Group) -> None:
    """Add `gate` and `baseline` to the `compress` command group."""
    group.add_command(gate_command)
    group.add_command(baseline_command)
