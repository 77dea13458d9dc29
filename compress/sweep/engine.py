"""The sweep driver: plan the trials, run them as Ray tasks, keep sweep.json current, find the Pareto set.

Without `address` a local Ray instance starts on this machine (nothing to set up); with one
(`auto`, `host:port`, `ray://host:port`) the trials run on that cluster, whose nodes must see the
sweep folder (a shared file system). sweep.json is rewritten after every change, so a sweep whose
driver died resumes from its folder (`--resume`): finished trials are kept, the rest run again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError
from compress.sweep import record as records

if TYPE_CHECKING:
    from rich.console import Console

    from compress.plan import Plan
    from compress.sweep_config import SweepConfig


@dataclass
class SweepOutcome:
    folder: Path
    record: dict[str, Any]


def _override(path: str, value: Any) -> str:
    return f"{path}={json.dumps(value)}"  # JSON is YAML: the value is read back exactly


def _check_parameters(plan: Plan, config: SweepConfig, trials: list[dict[str, Any]] | None) -> None:
    """Every value of every parameter, and every planned trial, makes a valid recipe, checked before
    anything runs: a typo in a path (or a combination a format refuses) is one line, not twelve
    failed trials."""
    from compress.errors import CompressError
    from compress.recipe import load_recipe
    from compress.sweep_config import Range

    for path, values in config.parameters.items():
        for value in ([values.low, values.high] if isinstance(values, Range) else values):
            try:
                load_recipe(plan.path, [_override(path, value)])
            except CompressError as exc:
                raise InputError(f"value {value!r} does not make a valid recipe: {exc.message}", file=plan.file,
                                 field=f"sweep.parameters.{path}") from None
    for number, parameters in enumerate(trials or []):
        try:
            load_recipe(plan.path, [_override(path, value) for path, value in parameters.items()])
        except CompressError as exc:
            shown = ", ".join(f"{path}={json.dumps(value)}" for path, value in parameters.items())
            raise InputError(f"trial {number} ({shown}) is not a valid recipe: {exc.message}", file=plan.file,
                             field="sweep.parameters") from None


def _new_record(plan: Plan, config: SweepConfig, sweep_id: str) -> dict[str, Any]:
    from compress.sweep.space import planned

    trials = planned(config)
    return {
        "schema_version": records.SWEEP_SCHEMA_VERSION, "id": sweep_id, "name": plan.recipe.name,
        "recipe": str(plan.path.resolve()), "recipe_sha256": hashlib.sha256(plan.path.read_bytes()).hexdigest(),
        "strategy": config.strategy, "seed": config.seed,
        "parameters": {k: (v if isinstance(v, list) else v.model_dump()) for k, v in config.parameters.items()},
        "objectives": {"metric": plan.recipe.task.metric, "lower_is_better": plan.metric.lower_is_better,
                       "target": config.objectives.latency.target or plan.recipe.verify.targets[0],
                       **config.objectives.model_dump(mode="json")},
        "constraints": config.constraints.model_dump(mode="json"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "finished": None,
        "trials": [_trial(i, p) for i, p in enumerate(trials or [])],
        "pareto": [], "pareto_feasible": [],
    }


def _trial(number: int, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"id": number, "parameters": parameters, "status": "pending", "run": None, "error": None,
            "objectives": None, "feasible": None, "violations": [], "attempts": 0, "seconds": None}


def _start_ray(address: str | None) -> bool:
    """Connect to the cluster at `address`, or start a local instance; True when we started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError ... by version
            raise InputError(f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}", field="--address") from None
        return False
    # "local": a new instance even where a cluster started with `ray start` runs on this machine
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=256 * 1024 * 1024)
    return True


def run_sweep(recipe: Path, *, out: Path, console: Console, address: str | None = None,
              resume: Path | None = None, parallel: int | None = None) -> SweepOutcome:
    from compress.console import quiet_terminal
    from compress.pipeline import OutputLock
    from compress.recipe import load_recipe

    plan = load_recipe(recipe)
    config = plan.recipe.sweep
    if config is None:
        raise InputError("the recipe has no sweep: section (parameters, strategy, objectives)", file=plan.file,
                         field="sweep")
    from compress.sweep.space import planned

    _check_parameters(plan, config, planned(config))
    out = out.resolve()
    if resume is not None:
        folder = resume.resolve()
        record = records.read(folder)
        if record.get("recipe_sha256") != hashlib.sha256(plan.path.read_bytes()).hexdigest():
            raise InputError("the recipe changed since this sweep started: start a new sweep (without --resume)",
                             file=plan.file, field="--resume")
    else:
        from compress.pipeline import new_run_id

        folder = out / plan.recipe.name / "sweeps" / new_run_id()
        folder.mkdir(parents=True)
        record = _new_record(plan, config, folder.name)
        records.write(folder, record)
    with OutputLock(folder), quiet_terminal(folder / "sweep.log", console):
        started_here = _start_ray(address)
        try:
            _drive(plan, config, folder, out / plan.recipe.name / "cache", record, console, parallel)
        finally:
            if started_here:
                import ray

                ray.shutdown()
    from compress.html_report import write_report

    write_report(folder, record)
    return SweepOutcome(folder=folder, record=record)


def _drive(plan: Plan, config: SweepConfig, folder: Path, cache: Path, record: dict[str, Any], console: Console,
           parallel: int | None) -> None:
    import ray

    from compress.console import activity, advance, running
    from compress.sweep.trial import DeviceQueue, attempts, run_trial

    hosts = {target.host for target in plan.targets}
    queues = {host: ray.remote(DeviceQueue).options(num_cpus=0, max_restarts=-1, max_task_retries=-1).remote(host)
              for host in hosts}
    cpus = float(ray.cluster_resources().get("CPU", 1))
    slots = parallel or config.parallel or max(1, int(cpus // config.cpus_per_trial))
    task = ray.remote(run_trial).options(num_cpus=config.cpus_per_trial, max_retries=config.retries,
                                         retry_exceptions=False)
    tpe = None
    if config.strategy == "tpe":
        from compress.sweep.space import TPE

        tpe = TPE(config, plan.metric.lower_is_better)
        for trial in record["trials"]:
            if trial["status"] == "ok":
                tpe.remember(trial["parameters"], records.objective_values(trial["objectives"] or {},
                                                                          plan.metric.lower_is_better))
    asked: dict[int, int] = {}  # trial id -> TPE trial number
    todo = _spread([t for t in record["trials"] if t["status"] != "ok"])
    total = config.trials if tpe is not None else len(record["trials"])
    in_flight: dict[Any, dict[str, Any]] = {}
    began: dict[int, float] = {}

    def submit(trial: dict[str, Any]) -> None:
        overrides = [_override(path, value) for path, value in trial["parameters"].items()]
        trial_dir = folder / "trials" / str(trial["id"])
        ref = task.remote(str(plan.path.resolve()), overrides, str(trial_dir), str(cache), queues)
        trial["status"] = "running"
        in_flight[ref] = trial
        began[trial["id"]] = time.perf_counter()

    done_before = sum(t["status"] == "ok" for t in record["trials"])
    with running(console, total or 0, f"sweep {plan.recipe.name}"):
        advance(console, done_before)

        def more_to_ask() -> bool:
            return tpe is not None and len(record["trials"]) < (config.trials or 0)

        while todo or in_flight or more_to_ask():
            while len(in_flight) < slots and (todo or more_to_ask()):
                if todo:
                    submit(todo.pop(0))
                else:
                    assert tpe is not None
                    number, parameters = tpe.ask()
                    trial = _trial(len(record["trials"]), parameters)
                    record["trials"].append(trial)
                    asked[trial["id"]] = number
                    submit(trial)
            records.write(folder, record)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            trial = in_flight.pop(ready[0])
            trial_dir = folder / "trials" / str(trial["id"])
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                said = str(exc).strip().splitlines()
                outcome = {"status": "failed", "error": f"{type(exc).__name__}: {said[0] if said else ''}"}
            trial["attempts"] = attempts(trial_dir)
            trial["seconds"] = round(outcome.get("seconds") or time.perf_counter() - began[trial["id"]], 2)
            _finish(trial, outcome, config)
            if tpe is not None:
                values = records.objective_values(trial["objectives"] or {}, plan.metric.lower_is_better)
                if trial["id"] in asked:
                    tpe.tell(asked.pop(trial["id"]), values)
                elif trial["status"] == "ok":
                    tpe.remember(trial["parameters"], values)
            records.refresh_pareto(record)
            records.write(folder, record)
            shown = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in trial["parameters"].items())
            activity(console, f"trial {trial['id']} {trial['status']} ({shown})")
            advance(console)
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    records.refresh_pareto(record)
    records.write(folder, record)


def _spread(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials in an order where those running at once differ in their first parameter: in a grid,
    neighbours share it (the same pruning ratio, say), so run side by side they would wait on each
    other's cache locks for the very steps they have in common."""
    if not trials or not trials[0]["parameters"]:
        return trials
    first = next(iter(trials[0]["parameters"]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for trial in trials:
        groups.setdefault(json.dumps(trial["parameters"].get(first), sort_keys=True), []).append(trial)
    rounds = itertools.zip_longest(*groups.values())
    return [trial for one_round in rounds for trial in one_round if trial is not None]


def _finish(trial: dict[str, Any], outcome: dict[str, Any], config: SweepConfig) -> None:
    from compress.results import Results

    if outcome["status"] != "ok":
        trial.update(status="failed", error=outcome.get("error"))
        return
    run = Path(outcome["run"])
    results = Results.model_validate_json((run / "results.json").read_text())
    first_format = next((a.format for a in results.artifacts if a.format != "torch"), None)
    point = records.trial_point(results, config.objectives, first_format)
    trial.update(run=os.path.relpath(run, run.parents[3]), objectives=point, error=point.get("error"))
    if "error" in point:
        trial.update(status="failed", feasible=False)
        return
    trial["violations"] = records.violations(point, config.constraints)
    trial.update(status="ok", feasible=not trial["violations"])
