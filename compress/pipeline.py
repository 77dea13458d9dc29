"""The pipeline: a loop over the plan's steps (compress.steps), then verification and results.

Every model along the way is an Artifact in the cache, keyed by its step's key; `--resume` reuses
those whose key is unchanged. The run folder is assembled under a hidden name and renamed when
complete, so a failed run never leaves a folder that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress import __version__, versions
from compress.artifact import size_of
from compress.cache import ArtifactCache
from compress.console import activity, advance, quiet_terminal, running
from compress.contracts import SOURCE_FORMAT
from compress.errors import (
    CompressError,
    InputError,
    InternalError,
    StageError,
    first_line,
    resource_error,
    unsupported_op,
)
from compress.runtimes.files import write_atomic
from compress.steps import Built, QuantizeStep, RunContext, Step, plan_steps

if TYPE_CHECKING:
    from rich.console import Console

    from compress.artifact import Artifact
    from compress.plan import Plan
    from compress.results import Results


@dataclass
class RunOptions:
    out: Path = Path("runs")
    resume: bool = False
    run_id: str | None = None
    verbose: bool = False  # library output on the terminal too, not only in run.log
    cache: Path | None = None  # a cache shared with other runs at once (a sweep's): default <out>/<name>/cache
    measure: Callable[..., Any] | None = None  # (target, request, timeout_s) -> response: a sweep's device queue


@dataclass
class RunOutcome:
    folder: Path
    results: Results
    table: str


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + os.urandom(2).hex()


class RunFolder:
    """`<out>/<name>/.<run-id>.partial` while the run works (with its run.log), renamed to
    `<run-id>` when it completes or `<run-id>.failed` (without artifacts) when it does not."""

    def __init__(self, out: Path, name: str, run_id: str) -> None:
        self.parent = out / name
        self.run_id = run_id
        self.staging = self.parent / f".{run_id}.partial"
        self._handler: logging.Handler | None = None
        self._propagate = True

    def __enter__(self) -> RunFolder:
        self.staging.mkdir(parents=True, exist_ok=False)
        self._handler = logging.FileHandler(self.staging / "run.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger("compress")
        root.addHandler(self._handler)
        root.setLevel(logging.INFO)
        self._propagate = root.propagate
        root.propagate = False  # the run's log goes to run.log, not to a handler a library gave the root
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        if exc is not None:
            # the traceback of anything unexpected goes to run.log, never to the terminal
            cause = exc.__cause__ if isinstance(exc, InternalError) and exc.__cause__ else exc
            logging.getLogger("compress.run").error(
                "run failed: %s", exc, exc_info=(type(cause), cause, cause.__traceback__)
                if not isinstance(exc, CompressError) or isinstance(exc, InternalError) else None)
        assert self._handler is not None
        logging.getLogger("compress").removeHandler(self._handler)
        logging.getLogger("compress").propagate = self._propagate
        self._handler.close()
        if exc is not None:
            shutil.rmtree(self.staging / "artifacts", ignore_errors=True)  # nothing half-written survives
            failed = self.parent / f"{self.run_id}.failed"
            os.replace(self.staging, failed)
            exc.run_log = failed / "run.log"  # type: ignore[attr-defined]

    def complete(self) -> Path:
        final = self.parent / self.run_id
        os.replace(self.staging, final)
        return final


def _check_out(out: Path, plan: Plan) -> None:
    """`--out` is a folder the run may fill: not a file, not the recipe's folder itself, not inside a
    folder the recipe reads inputs from."""
    where = out.resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder for runs", field="--out")
    if where == plan.folder.resolve():
        raise InputError(f"{out} is the recipe's own folder; give a folder for runs (the default is runs/)",
                         field="--out")
    for folder in plan.data_context().allowed:
        if where.is_relative_to(folder.resolve()):
            raise InputError(f"{out} is inside {folder}, a folder the recipe reads inputs from", field="--out")


class OutputLock:
    """One run at a time per `<out>/<name>` folder: a second fails at once, naming the first's PID. The
    lock is the kernel's (flock), so a run that died holds nothing and the next one takes over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self._handle: Any = None

    def __enter__(self) -> OutputLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # held, and so locked, for the whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise InputError(f"another compress run (pid {holder}) is using {self.path.parent}; wait for it to finish "
                             "or give another --out", field="--out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.truncate(0)  # no holder named once it ended
        self._handle.close()  # closing releases the lock


class Pipeline:
    def __init__(self, plan: Plan, options: RunOptions, console: Console) -> None:
        self.plan = plan
        self.recipe = plan.recipe
        self.options = options
        self.console = console
        self.cache = ArtifactCache(options.cache or options.out / self.recipe.name / "cache",
                                   shared=options.cache is not None)
        self.log = logging.getLogger("compress.run")
        self.refusals: list[dict[str, Any]] = []

    def run(self) -> RunOutcome:
        _check_out(self.options.out, self.plan)
        folder = RunFolder(self.options.out, self.recipe.name, self.options.run_id or new_run_id())
        with (OutputLock(self.options.out / self.recipe.name), folder,
              quiet_terminal(folder.staging / "run.log", self.console, verbose=self.options.verbose)):
            self.cache.sweep()
            for stale in folder.parent.glob(".*.partial"):  # a run killed outright: say so, keep its log
                if stale != folder.staging:
                    os.replace(stale, folder.parent / (stale.name[1:].removesuffix(".partial") + ".failed"))
            try:
                outcome = self._run(folder.run_id, folder.staging)
            except BaseException:
                # a signal between a staging folder's mkdir and its first use; a cleanup that fails in
                # turn (no memory left) must not replace the error the run ended with
                with contextlib.suppress(OSError, MemoryError):
                    self.cache.sweep()
                raise
            outcome.folder = folder.complete()
        return outcome

    def _run(self, run_id: str, folder: Path) -> RunOutcome:
        import yaml

        from compress.data import load_data
        from compress.sessions import run_outputs

        started = datetime.now(UTC).isoformat(timespec="seconds")
        write_atomic(folder / "recipe.resolved.yaml",
                     yaml.safe_dump(self.recipe.model_dump(mode="json"), sort_keys=False))
        flow = plan_steps(self.plan)
        environment = versions.environment([name for step in flow.steps for name in step.libraries]
                                           + [d for backend in self.plan.runtimes.values()
                                              for d in getattr(backend, "distributions", ())])
        write_atomic(folder / "versions.json", json.dumps(environment, indent=1))
        self.log.info("run %s of %s", run_id, self.plan.file)
        if self.plan.quantize_mode_reason and self.recipe.quantize is not None:
            self.console.log(f"int8 mode [bold]{self.recipe.quantize.mode}[/] (quantize.mode auto): "
                             f"{self.plan.quantize_mode_reason}")
            self.log.info("quantize.mode auto: %s: %s", self.recipe.quantize.mode, self.plan.quantize_mode_reason)
        for warning in self.plan.warnings:
            self.console.log(f"[yellow]warning[/] {warning}")
            self.log.warning("%s", warning)
        built: dict[Step, Built] = {}
        # the progress display starts before the data loads: a large data set shows it is being read
        with running(self.console, len(flow.steps) + 1, self.recipe.name):
            activity(self.console, "data")
            with guarded("data", self.plan.folder):
                data = load_data(self.plan)
            self.log.info("data %s: %d train, %d calibration, %d test", data.source, len(data.train),
                          len(data.calibration), len(data.test))
            advance(self.console)
            ctx = RunContext(plan=self.plan, data=data, console=self.console, log=self.log, run=run_outputs)
            for step in flow.steps:
                parent = built.get(step.parent) if step.parent is not None else None
                if step.parent is not None and parent is None:
                    advance(self.console)
                    continue  # its parent was refused
                result = self._step(step, parent, ctx)
                if result is not None:
                    built[step] = result
                advance(self.console)
            self._check_ignore_globs([b for b in built.values() if isinstance(b.step, QuantizeStep)])

            from compress.verify import Verifier

            artifacts = [b.artifact for b in built.values()]
            torch_models = {b.artifact.id: b.torch_model for b in built.values()
                            if b.artifact.format == SOURCE_FORMAT}
            assert ctx.original is not None
            with guarded("verify", folder / "verify"):
                verifier = Verifier(self.plan, data, ctx.original, folder / "verify", self.console, torch_models,
                                    measure=self.options.measure)
                measurements = verifier.verify(artifacts)
        with guarded("results", folder):
            return self._results(run_id, folder, started, data, list(built.values()), measurements, environment)

    def _step(self, step: Step, parent: Built | None, ctx: RunContext) -> Built | None:
        """Reuse or build one step's artifact; a refusable step that fails is recorded and skipped."""
        with guarded(step.label, self.cache.root):
            return self._build_or_reuse(step, parent, ctx)

    def _build_or_reuse(self, step: Step, parent: Built | None, ctx: RunContext) -> Built | None:
        try:
            key = step.key(ctx)
            with self.cache.building(key) if self.cache.shared else contextlib.nullcontext():
                result = self._reuse_or_build(step, key, parent, ctx)
            step.after(result, ctx)
        except StageError as exc:
            if not step.refusable:
                raise
            self._refuse(step, exc)
            return None
        self._say_what_stayed_float(result)
        return result

    def _reuse_or_build(self, step: Step, key: str, parent: Built | None, ctx: RunContext) -> Built:
        # a shared cache is read whatever --resume says: a sweep's trials share the steps they have in common
        cached = self.cache.lookup(key) if self.options.resume or self.cache.shared else None
        if cached is not None:
            self.log.info("%s: reused %s", step.label, key)
            result = Built(step, cached, True, 0.0, step.reuse(cached, parent, ctx))
        else:
            step.announce(ctx)
            started = time.perf_counter()
            models: list[Any] = []

            def build(folder: Path) -> Artifact:
                artifact, model = step.build(parent, folder, ctx)
                models.append(model)
                return artifact

            artifact = self.cache.store(key, build)
            result = Built(step, artifact, False, time.perf_counter() - started, models[0])
            self.log.info("%s %s in %.1fs", step.label, artifact.name, result.seconds)
        return result

    def _refuse(self, step: Step, exc: StageError) -> None:
        fmt = getattr(step.format, "name", "?")  # type: ignore[attr-defined]
        source = step.parent.name if step.parent else step.name
        op = getattr(exc, "op", None) or unsupported_op(exc.message)
        self.console.log(f"[yellow]refused[/] {fmt} for {source} at {step.label}: {exc.message}")
        self.log.warning("refused %s for %s at %s: %s", fmt, source, step.label, exc.message)
        self.refusals.append({"artifact": source, "format": fmt, "stage": step.label, "op": op, "reason": exc.message})

    def _check_ignore_globs(self, quantized: list[Built]) -> None:
        config = self.recipe.quantize
        if config is None:
            return
        for index, pattern in enumerate(config.ignore):
            if not any(b.artifact.info.get("ignore_matches", {}).get(pattern) for b in quantized):
                raise InputError(f"{pattern!r} matches no layer in any format (each format matches its own layer "
                                 "names: see docs/recipe.md)", file=self.plan.file, field=f"quantize.ignore[{index}]")

    def _say_what_stayed_float(self, built: Built) -> None:
        """Say so when a quantized artifact is labelled mixed, or left a recurrent layer in float
        (quantizers do it silently); its info names the ops, and its precision says mixed."""
        artifact = built.artifact
        label = artifact.info.get("label")
        if not label:
            return
        recurrent = artifact.info.get("recurrent_in_float") or {}
        layers = sorted({type(m).__name__ for m in built.torch_model.modules()
                         if type(m).__name__ in ("LSTM", "GRU", "RNN")}) if built.torch_model is not None else []
        if recurrent or (layers and artifact.format and label["precision"] == "mixed"):
            ops = "; ".join(f"{len(names)} {op} op(s)" for op, names in recurrent.items())
            message = (f"{artifact.name}: the model's {'/'.join(layers) or 'recurrent'} layer(s) stay in float"
                       + (f" ({ops})" if ops else ""))
            self.console.log(f"[yellow]left in float[/] {message}")
            self.log.warning("left in float: %s", message)
        if label["precision"] == "mixed":
            floats = artifact.info.get("left_in_float") or {}
            named = ", ".join(f"{op} x{len(names)}" for op, names in floats.items())
            message = (f"{artifact.name}: labelled mixed: {label['basis']} {label['share']} < quantize.min_int8_share "
                       f"{label['min_int8_share']} (in float: {named or 'nothing weighted'})")
            self.console.log(f"[yellow]mixed[/] {message}")
            self.log.warning("%s", message)

    def _results(self, run_id: str, folder: Path, started: str, data: Any, built: list[Built], measurements: list[Any],
                 environment: dict[str, str]) -> RunOutcome:
        from compress.report import render_table, summarize
        from compress.results import Results

        complete = all(m.status in ("ok", "skipped") for m in measurements)
        budgets = [_budget_record(b) for b in built if "accuracy_aware" in b.artifact.info]
        missed = [b for b in budgets if not b["met"]]
        for record in missed:
            self.log.warning("%s", record["message"])
        results = Results(
            compress_version=__version__, run_id=run_id, recipe=str(self.plan.path.resolve()),
            recipe_name=self.recipe.name, started=started, finished=datetime.now(UTC).isoformat(timespec="seconds"),
            status="incomplete" if not complete else "budget_missed" if missed else "complete",
            accuracy_budget=budgets,
            task={**self.recipe.task.model_dump(), "lower_is_better": self.plan.metric.lower_is_better},
            data={"source": data.source, "train": len(data.train), "calibration": len(data.calibration),
                  "test": len(data.test), "fingerprint": data.fingerprint()},
            stages=[{"name": b.label, "artifact": b.artifact.name, "cached": b.cached, "seconds": round(b.seconds, 3),
                     "info": b.artifact.info} for b in built],
            artifacts=_link_records([b.artifact for b in built], folder), measurements=measurements,
            refusals=self.refusals, versions=environment)
        results.summary = summarize(results)
        if self.recipe.gates is not None:
            from compress.gates import evaluate

            results.summary["gates"] = [c.as_dict() for c in evaluate(results, self.recipe.gates)]
        table = render_table(results)
        write_atomic(folder / "results.json", results.model_dump_json(indent=1))
        write_atomic(folder / "table.txt", table)
        from compress.html_report import run_report

        write_atomic(folder / "report.html", run_report(results))
        return RunOutcome(folder=folder, results=results, table=table)


@contextlib.contextmanager
def guarded(where: str, folder: Path | None = None) -> Iterator[None]:
    """Errors of one part of a run as one line: the machine running out of disk or memory names the
    step and the folder; anything unexpected is an internal error whose traceback goes to run.log."""
    try:
        yield
    except CompressError:
        raise
    except Exception as exc:
        running_out = resource_error(exc, where, str(folder) if folder else None)
        if running_out is not None:
            raise running_out from exc
        raise InternalError(f"internal error in {where}: {type(exc).__name__}: {first_line(exc)}") from exc


def _budget_record(built: Built) -> dict[str, Any]:
    """An accuracy-aware int8 artifact's outcome: the best found, its score, and what it took."""
    from compress.accuracy import missed_message

    search = built.artifact.info["accuracy_aware"]
    return {"format": built.artifact.format, "artifact": built.artifact.name, "budget": search["budget"],
            "validation_metric_fp32": search["validation_metric_fp32"],
            "validation_metric_int8": search["validation_metric_int8"], "met": search["budget_met"],
            "kept_in_float": search["kept_in_float"], "trials": search.get("trials"), "stopped": search.get("stopped"),
            "message": "" if search["budget_met"] else missed_message(built.artifact.name, built.artifact.info)}


def _link_records(artifacts: list[Artifact], folder: Path) -> list[Any]:
    """Link each artifact into the run folder and describe it."""
    from compress.results import ArtifactRecord

    records = []
    for artifact in artifacts:
        dest = folder / "artifacts" / artifact.name / artifact.path.name
        _link_tree(artifact.path, dest)
        records.append(ArtifactRecord(
            name=artifact.name, id=artifact.id, format=artifact.format, precision=artifact.precision,
            path=str(dest.relative_to(folder)), sha256=artifact.sha256, size_bytes=size_of(artifact.path),
            params=artifact.attributes.get("params"), macs=artifact.attributes.get("macs"),
            lineage=list(artifact.lineage), parent=artifact.parent, info=artifact.info,
            attributes={k: v for k, v in artifact.attributes.items() if k not in ("params", "macs")}))
    return records


def _link_tree(source: Path, dest: Path) -> None:
    """Hard-link (or copy) a file or folder from the cache into the run folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for item in source.rglob("*"):
            if item.is_file():
                _link_tree(item, dest / item.relative_to(source))
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)
