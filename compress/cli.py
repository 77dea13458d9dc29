"""The `compress` command. Heavy libraries are imported inside commands, so --help stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3


def _fail(exc: Exception) -> None:
    from compress.errors import CompressError

    code = exc.exit_code if isinstance(exc, CompressError) else EXIT_FAILED
    click.echo(f"error: {exc}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
def run(recipe: Path, overrides: tuple[str, ...], resume: bool, out: Path) -> None:
    """Run RECIPE end to end: stages, exports, int8, verification, results."""
    from rich.console import Console

    from compress.errors import CompressError
    from compress.pipeline import Pipeline, RunOptions
    from compress.recipe import load_recipe

    console = Console(stderr=True)
    try:
        loaded = load_recipe(recipe, list(overrides))
        outcome = Pipeline(loaded, RunOptions(out=out, resume=resume), console).run()
    except CompressError as exc:
        _fail(exc)
    click.echo(outcome.table)
    click.echo(f"results: {outcome.folder / 'results.json'}")
    if outcome.results.status != "complete":
        click.echo("error: the run is incomplete: a measurement failed or timed out (see the table)", err=True)
        sys.exit(EXIT_INCOMPLETE)
    parity_failures = outcome.results.summary.get("parity_failures", [])
    if parity_failures:
        click.echo(f"error: parity failed: {parity_failures[0]}"
                   + (f" (and {len(parity_failures) - 1} more)" if len(parity_failures) > 1 else ""), err=True)
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a value first.")
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Check RECIPE (structure, then each stage's config) without running it."""
    from compress.errors import CompressError
    from compress.recipe import load_recipe

    try:
        loaded = load_recipe(recipe, list(overrides))
    except CompressError as exc:
        _fail(exc)
    stages = ", ".join(s.name for s in loaded.stages) or "no stages"
    click.echo(f"{recipe}: valid ({stages}; export {', '.join(e.name for e in loaded.exports)})")


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


if __name__ == "__main__":
    main()
