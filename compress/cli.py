"""The `compress` command. Heavy libraries are imported inside commands, so --help stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from compress.errors import ExitCode
from compress.errors import exit_with as _fail


class Guarded(click.Group):
    """Every command behind one error boundary: a known error is one line with its exit code; an
    interrupt ends what the run started and exits 130 (SIGINT) or 143 (SIGTERM); anything unexpected
    is one line, its traceback in run.log (or a log file named in that line). Never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        import logging

        from compress.errors import CompressError, Interrupted
        from compress.interrupts import signals_as_exceptions

        # A log handler that fails in turn (no memory, a full disk) drops its record instead of
        # printing a traceback of its own to the terminal (Python's advice for production).
        logging.raiseExceptions = False

        try:
            with signals_as_exceptions():
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            _stop_agents()
            click.echo("error: interrupted (SIGINT): the run folder, if any, is marked .failed", err=True)
            sys.exit(130)
        except Interrupted as exc:
            _stop_agents()
            click.echo(f"error: interrupted (signal {exc.signal_number}): the run folder, if any, is marked .failed",
                       err=True)
            sys.exit(128 + exc.signal_number)
        except CompressError as exc:
            _fail(_with_log(exc))
        except Exception as exc:
            _fail(_internal(exc))
        return None


def _stop_agents() -> None:
    if "compress.runtimes.targets.local" in sys.modules:
        sys.modules["compress.runtimes.targets.local"].stop_all()


def _with_log(exc: Exception) -> Exception:
    from compress.errors import InternalError

    if isinstance(exc, InternalError):
        log = getattr(exc, "run_log", None) or _write_traceback(exc.__cause__ or exc)
        return InternalError(f"{exc.message}; details in {log}", file=exc.file, line=exc.line, field=exc.field)
    return exc


def _internal(exc: BaseException) -> Exception:
    from compress.errors import InternalError, first_line, resource_error

    running_out = resource_error(exc, "compress")
    if running_out is not None:
        return running_out
    log = getattr(exc, "run_log", None) or _write_traceback(exc)
    return InternalError(f"internal error: {type(exc).__name__}: {first_line(exc)}; details in {log}")


def _write_traceback(exc: BaseException) -> str:
    import tempfile
    import traceback

    handle, path = tempfile.mkstemp(prefix="compress-error-", suffix=".log")
    with open(handle, "w") as log:
        log.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


@click.group(cls=Guarded, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-compress", prog_name="compress")
def main() -> None:
    """Prune, distill and int8-quantize a PyTorch model, export it, and verify it.

    Exit codes: 0 success, 1 a stage failed, 2 bad input (recipe, model, data, usage),
    3 the run is incomplete (a measurement crashed or timed out).
    """


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value, e.g. --set stages[1].distill.epochs=2 (repeatable).")
@click.option("--resume", is_flag=True, help="Reuse cached artifacts whose input and config are unchanged.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Folder that holds runs/<name>/<run-id>/.")
@click.option("-v", "--verbose", is_flag=True, help="Show library logs and warnings too (they always go to run.log).")
def run(recipe: Path, overrides: tuple[str, ...], resume: bool, out: Path, verbose: bool) -> None:
    """Run RECIPE end to end: stages, exports, int8, verification, results."""
    from compress.console import RunConsole
    from compress.errors import CompressError
    from compress.pipeline import Pipeline, RunOptions
    from compress.recipe import load_recipe
    from compress.report import render_summary

    console = RunConsole(stderr=True)
    try:
        plan = load_recipe(recipe, list(overrides))
        outcome = Pipeline(plan, RunOptions(out=out, resume=resume, verbose=verbose), console).run()
    except CompressError as exc:
        _fail(exc)
    click.echo(render_summary(outcome.results), nl=False)
    click.echo(f"table: {outcome.folder / 'table.txt'}")
    if (outcome.folder / "report.html").is_file():
        click.echo(f"report: {outcome.folder / 'report.html'}")
    click.echo(f"results: {outcome.folder / 'results.json'}")
    if outcome.results.status == "incomplete":
        click.echo("error: the run is incomplete: a measurement failed or timed out (see the table)", err=True)
        sys.exit(ExitCode.INCOMPLETE)
    failures = [f"accuracy budget missed: {b['message']}" for b in outcome.results.accuracy_budget if not b["met"]]
    failures += [f"parity failed: {f}" for f in outcome.results.summary.get("parity_failures", [])]
    gate_checks = outcome.results.summary.get("gates", [])
    failures += [f"gate failed: {c['message']}" for c in gate_checks if not c["passed"]]
    if gate_checks:
        click.echo(f"gates: {sum(c['passed'] for c in gate_checks)} of {len(gate_checks)} checks passed")
    if failures:
        click.echo(f"error: {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
                   err=True)
        sys.exit(ExitCode.FAILED)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a value first.")
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Check RECIPE (structure, then each stage's config) without running it."""
    from compress.errors import CompressError
    from compress.recipe import load_recipe

    try:
        plan = load_recipe(recipe, list(overrides))
    except CompressError as exc:
        _fail(exc)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    stages = ", ".join(s.name for s in plan.stages) or "no stages"
    click.echo(f"{recipe}: valid ({stages}; export {', '.join(f.name for f in plan.formats)})")


@main.command()
@click.option("--results", "which", flag_value="results", help="The results.json schema instead.")
def schema(which: str | None) -> None:
    """Print the JSON Schema of recipes (for editors), or of results.json."""
    if which == "results":
        from compress.results import Results

        document = Results.model_json_schema()
    else:
        from compress.recipe import recipe_json_schema

        document = recipe_json_schema()
    click.echo(json.dumps(document, indent=2))


@main.command(name="bench")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--runtime", default=None, help="A runtime that loads the file (onnxruntime, openvino, litert, torch, "
              "a plugin's), or 'all' of them.")
@click.option("--threads", default="1", show_default=True, help="Thread counts to measure, e.g. 1,2.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--min-runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="[NAME=]D1,D2,...",
              help="Shape of an input with dynamic dimensions (repeatable).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] (onnxruntime), gpu[:N] (openvino).")
@click.option("--trust", is_flag=True, help="Allow .pt2 files, which run code when loaded.")
@click.option("--target", default="local", show_default=True, metavar="SPEC",
              help="Where to run: local, cuda[:N], ssh://user@host[:port][?options], adb://SERIAL (docs/targets.md).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Seconds one measurement may take before it is killed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_command(model: Path, runtime: str | None, threads: str, batch: int, warmup: int, min_runs: int,
                  min_seconds: float, input_shapes: tuple[str, ...], device: str, trust: bool, target: str,
                  timeout_s: float, as_json: bool) -> None:
    """Benchmark MODEL (.onnx, .xml, .tflite, .pt2, or a plugin format's file) on this machine or a target,
    without a recipe."""
    from compress.bench import bench, parse_input_shapes, parse_threads, render
    from compress.errors import CompressError

    try:
        rows = bench(model, runtime=runtime, threads=parse_threads(threads), batch=batch, warmup=warmup,
                     min_runs=min_runs, min_seconds=min_seconds, input_shapes=parse_input_shapes(input_shapes),
                     device=device, trust=trust, target=target, timeout_s=timeout_s)
    except CompressError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([{"model": str(model), "runtime": r.runtime, "threads": r.threads,
                                **r.response.to_json()} for r in rows], indent=1))
    else:
        click.echo(render(model, rows))
    failed = [r for r in rows if not r.response.ok]
    if failed:
        click.echo(f"error: {failed[0].runtime} ({failed[0].threads} threads): {failed[0].response.error}", err=True)
        sys.exit(ExitCode.INCOMPLETE)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True,
              help="Folder that holds runs/<name>/sweeps/<sweep-id>/ and the cache the trials share.")
@click.option("--address", default=None, metavar="ADDR",
              help="A Ray cluster (auto, host:port, ray://host:port); default: start Ray on this machine.")
@click.option("--resume", type=click.Path(path_type=Path), default=None, metavar="SWEEP_FOLDER",
              help="Go on with a sweep whose driver stopped: finished trials are kept, the rest run.")
@click.option("--parallel", type=click.IntRange(min=1), default=None, help="Trials at once (default: sweep.parallel, "
              "else Ray's CPUs / sweep.cpus_per_trial).")
def sweep(recipe: Path, out: Path, address: str | None, resume: Path | None, parallel: int | None) -> None:
    """Run RECIPE's sweep: section, each trial a recipe run on Ray; write sweep.json and the Pareto set."""
    from compress.console import RunConsole
    from compress.errors import CompressError
    from compress.sweep.engine import run_sweep
    from compress.sweep.summary import render_sweep

    console = RunConsole(stderr=True)
    try:
        outcome = run_sweep(recipe, out=out, console=console, address=address, resume=resume, parallel=parallel)
    except CompressError as exc:
        _fail(exc)
    click.echo(render_sweep(outcome.record), nl=False)
    click.echo(f"report: {outcome.folder / 'report.html'}")
    click.echo(f"sweep: {outcome.folder / 'sweep.json'}")
    trials = outcome.record["trials"]
    failed = [t for t in trials if t["status"] != "ok"]
    if failed:
        click.echo(f"error: {len(failed)} of {len(trials)} trials did not finish: trial {failed[0]['id']}: "
                   f"{failed[0]['error']}", err=True)
        sys.exit(ExitCode.INCOMPLETE)
    if not any(t["feasible"] for t in trials):
        click.echo("error: no trial meets the sweep's constraints (the Pareto set over all trials is kept)", err=True)
        sys.exit(ExitCode.FAILED)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
def report(folder: Path) -> None:
    """Write FOLDER/report.html for a run (results.json) or a sweep (sweep.json): one self-contained page."""
    from compress.errors import CompressError, InputError
    from compress.html_report import write_report

    if not folder.is_dir():
        _fail(InputError("no such run or sweep folder", file=str(folder)))
    try:
        sweep = None
        if (folder / "sweep.json").is_file():
            from compress.sweep.record import read

            sweep = read(folder)  # one line naming the file when it is not a sweep record
        click.echo(f"report: {write_report(folder, sweep)}")
    except CompressError as exc:
        _fail(exc)


@main.command()
def plugins() -> None:
    """List installed plugins and the optional libraries they miss."""
    from rich.console import Console
    from rich.table import Table

    from compress.registry import GROUPS, inventory

    table = Table(title="compress plugins")
    for column in ("kind", "name", "from", "status", "install"):
        table.add_column(column)
    for row in inventory():
        status = "[green]ok[/]" if row.status == "ok" else f"[red]{row.status}[/]"
        table.add_row(GROUPS[row.group], row.name, row.distribution, status, "" if row.status == "ok" else row.hint)
    Console().print(table)


from compress.gate_cli import register as _register_gate_commands  # noqa: E402 - after the group exists

_register_gate_commands(main)

if __name__ == "__main__":
    main()
