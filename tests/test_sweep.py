"""compress sweep: the trials planned, run on Ray (local, or a two-node cluster with a worker killed
mid-trial), each finished exactly once, and the Pareto set recomputed here from the runs' own results."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from compress.sweep.record import trial_point, violations
from compress.sweep.space import planned
from compress.sweep_config import SweepConfig
from tests.conftest import small_recipe
from tests.test_html_report import _m, _results
from tests.test_recipe import fails

RAY = Path(sys.executable).parent / "ray"
GRID = {"stages[0].prune.target_macs_ratio": [0.5, 0.6], "quantize.calibration.method": ["minmax", "entropy"]}


def _sweep_recipe(**sweep) -> dict:
    return small_recipe(sweep={"parameters": GRID, **sweep})


def _compress(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, check=False)


# --- the sweep section and the plan ---------------------------------------------------------------

@pytest.mark.parametrize(("sweep", "message"), [
    ({"parameters": {"seed": {"low": 0, "high": 3}}}, "is a range: grid needs a list of values"),
    ({"parameters": {"seed": [1, 2]}, "strategy": "random"}, "strategy random needs trials"),
    ({"parameters": {"seed": [1, 2]}, "trials": 3}, "grid runs every combination"),
    ({"parameters": {"seed": []}}, "parameter 'seed' has no values"),
    ({"parameters": {}}, "sweep.parameters"),
    ({"parameters": {"seed": [1]}, "stratgy": "grid"}, "stratgy"),
])
def test_a_bad_sweep_section_is_one_line(cli, write_recipe, sweep, message):
    line = fails(cli("validate", write_recipe(small_recipe(sweep=sweep))))
    assert "sweep" in line and message in line, line


def test_a_parameter_path_that_breaks_the_recipe_is_refused_before_anything_runs(cli, write_recipe, tmp_path):
    recipe = write_recipe(small_recipe(sweep={"parameters": {"quantize.calibration.methd": ["minmax"]}}))
    line = fails(cli("sweep", recipe, "--out", tmp_path / "runs"))
    assert line.startswith(f"error: {recipe}") and "sweep.parameters.quantize.calibration.methd" in line, line
    assert not (tmp_path / "runs").exists()
    line = fails(cli("sweep", write_recipe(small_recipe(), "plain.yaml"), "--out", tmp_path / "runs"))
    assert "no sweep: section" in line
    # each value is valid alone; one combination is not (NNCF has no KL estimator)
    mixed = {"quantize.calibration.method": ["minmax", "entropy"], "export": [["onnx"], ["openvino"]]}
    line = fails(cli("sweep", write_recipe(small_recipe(sweep={"parameters": mixed}), "mixed.yaml"),
                     "--out", tmp_path / "runs"))
    assert line.startswith(f"error: {tmp_path / 'mixed.yaml'}: sweep.parameters: trial 3 "
                           '(quantize.calibration.method="entropy", export=["openvino"]) is not a valid recipe: '
                           "format 'openvino' cannot honour it"), line
    assert not (tmp_path / "runs").exists()


def test_grid_is_every_combination_and_random_is_seeded_and_in_range():
    grid = planned(SweepConfig.model_validate({"parameters": GRID}))
    assert grid == [dict(zip(GRID, combo, strict=True)) for combo in itertools.product(*GRID.values())]
    config = {"parameters": {"a": {"low": 1e-4, "high": 1e-1, "log": True}, "b": {"low": 2, "high": 9, "integer": True},
                             "c": [[1], [2, 3]]}, "strategy": "random", "trials": 40, "seed": 7}
    first, again = planned(SweepConfig.model_validate(config)), planned(SweepConfig.model_validate(config))
    assert first == again and len(first) == 40
    assert all(1e-4 <= t["a"] <= 1e-1 and isinstance(t["b"], int) and 2 <= t["b"] <= 9 and t["c"] in ([1], [2, 3])
               for t in first)
    # log-uniform: about half the draws below the geometric middle (1e-2.5), not 3%
    assert 10 <= sum(t["a"] < 10 ** -2.5 for t in first) <= 30
    other = planned(SweepConfig.model_validate({**config, "seed": 8}))
    assert other != first


def test_tpe_asks_within_the_space_and_learns_from_what_it_is_told():
    from compress.sweep.space import TPE

    config = SweepConfig.model_validate({"parameters": {"x": {"low": 0.0, "high": 1.0}, "f": [["onnx"], ["tflite"]]},
                                         "strategy": "tpe", "trials": 12, "seed": 0})
    tpe = TPE(config, lower_is_better=False)
    tpe.remember({"x": 0.5, "f": ["onnx"]}, (-0.9, 1.0, 1.0))  # a trial finished before a resume
    for _ in range(10):
        number, params = tpe.ask()
        assert 0.0 <= params["x"] <= 1.0 and params["f"] in (["onnx"], ["tflite"])
        tpe.tell(number, (-params["x"], 1.0, 1.0) if params["f"] == ["onnx"] else None)  # tflite trials fail
    states = [t.state.name for t in tpe.study.trials]
    assert len(states) == 11 and states.count("FAIL") == sum(t.params["f"] == 1 for t in tpe.study.trials)


def test_a_trial_point_is_its_final_artifact_and_a_missing_figure_fails_a_constraint():
    from compress.sweep_config import Constraints, Objectives

    results = _results([_m("original", "torch", 0.95, 2.0), _m("small.int8.onnx", "onnxruntime", 0.93, 0.5),
                        _m("small.int8.onnx", "openvino", 0.94, 0.7)])
    point = trial_point(results, Objectives(), "onnx")
    assert (point["artifact"], point["runtime"], point["metric"], point["latency_ms"], point["size_mb"]) == \
        ("small.int8.onnx", "onnxruntime", 0.93, 0.5, 1.0)
    assert point["drop"] == pytest.approx(0.02)
    on_openvino = trial_point(results, Objectives.model_validate({"latency": {"runtime": "openvino"}}), "onnx")
    assert (on_openvino["metric"], on_openvino["latency_ms"]) == (0.94, 0.7)
    assert violations(point, Constraints(max_accuracy_drop=0.03, max_size_mb=2)) == []
    assert violations(point, Constraints(max_accuracy_drop=0.01)) == ["accuracy drop 0.02 > 0.01"]
    assert violations({**point, "latency_ms": None}, Constraints(max_latency_ms=1)) == ["latency ms unknown"]
    assert "error" in trial_point(results, Objectives(artifact="{format}.missing"), "onnx")
    # no measurement of the original on torch: the drop is unknown, so a drop constraint is not met
    alone = _results([_m("small.int8.onnx", "onnxruntime", 0.93, 0.5)])
    assert violations(trial_point(alone, Objectives(), "onnx"), Constraints(max_accuracy_drop=1)) == \
        ["accuracy drop unknown"]


# --- sweeps on Ray ----------------------------------------------------------------------------------

def _points_from_runs(folder: Path, record: dict) -> dict[int, tuple[float, float, float]]:
    """Each trial's (top1, p50, MB) read from its own results.json, without the sweep's code."""
    points = {}
    for trial in record["trials"]:
        results = json.loads((folder / trial["run"] / "results.json").read_text())
        int8 = next(a for a in results["artifacts"] if a["precision"] == "int8")
        m = next(m for m in results["measurements"] if m["artifact"] == int8["name"] and m["status"] == "ok")
        points[trial["id"]] = (m["metric"]["top1"], m["latency"]["p50_ms"], int8["size_bytes"] / 1e6)
    return points


def _brute_front(points: dict[int, tuple[float, float, float]]) -> set[int]:
    def beats(a, b):
        a, b = (-a[0], a[1], a[2]), (-b[0], b[1], b[2])
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return {i for i, p in points.items() if not any(beats(q, p) for j, q in points.items() if j != i)}


def _completed_runs(trial_dir: Path) -> list[Path]:
    return [p.parent for p in trial_dir.glob("*/*/results.json")
            if not p.parent.name.startswith(".") and not p.parent.name.endswith(".failed")]


@pytest.mark.slow
def test_sweep_on_local_ray_runs_each_trial_once_shares_the_cache_and_resumes(write_recipe, tmp_path):
    recipe = write_recipe(_sweep_recipe(constraints={"max_accuracy_drop": 0.5}))
    done = _compress("sweep", recipe, "--out", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    console = done.stdout.splitlines() + done.stderr.splitlines()
    assert len(console) < 20, console
    # the summary fits 120 columns (the lines naming files are as long as their paths)
    assert max(len(line) for line in console if not line.startswith(("report: ", "sweep: "))) <= 120, console
    folder = Path(next(line for line in done.stdout.splitlines() if line.startswith("sweep: "))[7:]).parent
    record = json.loads((folder / "sweep.json").read_text())
    assert [t["parameters"] for t in record["trials"]] == planned(SweepConfig.model_validate({"parameters": GRID}))
    assert all(t["status"] == "ok" and t["attempts"] == 1 for t in record["trials"])
    for trial in record["trials"]:
        assert _completed_runs(folder / "trials" / str(trial["id"])) == [folder / trial["run"]]
        resolved = yaml.safe_load((folder / trial["run"] / "recipe.resolved.yaml").read_text())
        assert resolved["stages"][0]["prune"]["target_macs_ratio"] == trial["parameters"][
            "stages[0].prune.target_macs_ratio"]
        assert resolved["quantize"]["calibration"]["method"] == trial["parameters"]["quantize.calibration.method"]
    points = _points_from_runs(folder, record)
    for trial in record["trials"]:
        assert (trial["objectives"]["metric"], trial["objectives"]["latency_ms"],
                trial["objectives"]["size_mb"]) == pytest.approx(points[trial["id"]])
    assert set(record["pareto"]) == _brute_front(points)
    # the trials share one cache: the original model was trained by exactly one of them
    trained = [s for t in record["trials"] for s in json.loads(
        (folder / t["run"] / "results.json").read_text())["stages"] if s["name"] == "original" and not s["cached"]]
    assert len(trained) == 1
    assert (folder / "report.html").stat().st_size > 1_000_000  # plotly.js is inside: it works offline

    # the driver died after trial 3 started: resume runs trial 3 alone, keeps the rest
    record["trials"][3].update(status="running", objectives=None, run=None)
    (folder / "sweep.json").write_text(json.dumps(record))
    import shutil

    shutil.rmtree(folder / "trials" / "3")
    again = _compress("sweep", recipe, "--out", tmp_path / "runs", "--resume", folder, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = json.loads((folder / "sweep.json").read_text())
    assert [t["attempts"] for t in resumed["trials"]] == [1, 1, 1, 1]
    assert resumed["trials"][:3] == record["trials"][:3]
    assert resumed["trials"][3]["status"] == "ok" and len(_completed_runs(folder / "trials" / "3")) == 1

    recipe.write_text(recipe.read_text().replace("seed: 0", "seed: 1"))
    changed = _compress("sweep", recipe, "--out", tmp_path / "runs", "--resume", folder, cwd=tmp_path)
    assert changed.returncode == 2 and "the recipe changed since this sweep started" in changed.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ray_cluster
def test_a_worker_killed_mid_trial_on_a_two_node_cluster_loses_no_trial(write_recipe, tmp_path):
    if not RAY.is_file():
        pytest.skip(f"no `ray` command beside {sys.executable} (pip install ray)")
    port = _free_port()
    # Ray's token authentication (its default for `ray start --head`): every node and the driver use it
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "token"}
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--include-dashboard", "false", *common], check=True, capture_output=True, env=env,
                       timeout=120)
        subprocess.run([str(RAY), "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                        *common], check=True, capture_output=True, env=env, timeout=120)
        grid = {"quantize.calibration.method": ["minmax", "entropy"]}
        recipe = write_recipe(small_recipe(sweep={"parameters": grid}))
        sweep = subprocess.Popen([sys.executable, "-m", "compress.cli", "sweep", recipe, "--out", tmp_path / "runs",
                                  "--address", f"127.0.0.1:{port}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        # kill the worker of the first trial that starts, while its run is under way
        killed = None
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and sweep.poll() is None:
            for attempts in (tmp_path / "runs").glob("small/sweeps/*/trials/*/attempts.jsonl"):
                partial = list(attempts.parent.glob("small/.*.partial"))
                if partial:  # the pipeline is running in that worker
                    killed = (attempts.parent.name, json.loads(attempts.read_text().splitlines()[0])["pid"])
                    os.kill(killed[1], signal.SIGKILL)
                    break
            time.sleep(0.2)
        assert killed is not None, "no trial was seen running"
        stdout, stderr = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, stdout + stderr
        folder = Path(next(line for line in stdout.splitlines() if line.startswith("sweep: "))[7:]).parent
        record = json.loads((folder / "sweep.json").read_text())
        assert sorted(t["id"] for t in record["trials"]) == [0, 1]
        assert all(t["status"] == "ok" for t in record["trials"])
        for trial in record["trials"]:
            trial_dir = folder / "trials" / str(trial["id"])
            assert len(_completed_runs(trial_dir)) == 1  # finished exactly once
            if str(trial["id"]) == killed[0]:
                assert trial["attempts"] >= 2  # the killed attempt, then the retry
                assert list((trial_dir / "small").glob("*.failed"))  # the killed run is marked, not reused
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120, check=False)


def test_a_shared_cache_keeps_what_another_run_is_building_and_sweeps_what_nobody_is(tmp_path):
    from compress.cache import ArtifactCache

    cache = ArtifactCache(tmp_path / "cache", shared=True)
    building, abandoned = tmp_path / "cache" / ".k1.abc", tmp_path / "cache" / ".k2.def"
    with cache.building("k1") as held:
        assert held
        building.mkdir(parents=True)
        abandoned.mkdir()
        (cache.root / ".locks" / "k2.lock").touch()  # k2's builder died: its lock file stays, unheld
        with ArtifactCache(tmp_path / "cache").building("k1", wait=False) as free:
            assert free is False  # another handle (another run) sees k1 taken
        cache.sweep()
        assert building.is_dir() and not abandoned.exists()
    cache.sweep()
    assert not building.exists()


@pytest.mark.slow
def test_tpe_asks_trials_until_its_count_and_a_killed_driver_resumes(write_recipe, tmp_path):
    """Optuna's TPE through the driver: trials asked as results come in, up to `trials`; the driver
    killed outright mid-sweep, then --resume: every trial finished exactly once."""
    sweep = {"parameters": {"quantize.calibration.samples": {"low": 16, "high": 64, "integer": True},
                            "quantize.calibration.method": ["minmax", "percentile"]},
             "strategy": "tpe", "trials": 3, "parallel": 1}
    recipe = write_recipe(small_recipe(sweep=sweep))
    driver = subprocess.Popen([sys.executable, "-m", "compress.cli", "sweep", recipe, "--out", tmp_path / "runs"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    records = tmp_path / "runs" / "small" / "sweeps"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        found = list(records.glob("*/sweep.json"))
        if found and sum(t["status"] == "ok" for t in json.loads(found[0].read_text())["trials"]) >= 1:
            break
        time.sleep(0.5)
    assert driver.poll() is None, driver.communicate()
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray instance it started
    driver.wait(timeout=60)
    folder = found[0].parent
    before = json.loads((folder / "sweep.json").read_text())
    finished = sum(t["status"] == "ok" for t in before["trials"])
    assert finished >= 1, "killed before a trial finished"
    assert finished < 3, "the sweep had ended before the driver was killed"
    again = _compress("sweep", recipe, "--out", tmp_path / "runs", "--resume", folder, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    record = json.loads((folder / "sweep.json").read_text())
    assert [t["id"] for t in record["trials"]] == [0, 1, 2] and all(t["status"] == "ok" for t in record["trials"])
    for trial in record["trials"]:
        params = trial["parameters"]
        assert 16 <= params["quantize.calibration.samples"] <= 64
        assert isinstance(params["quantize.calibration.samples"], int)
        assert len(_completed_runs(folder / "trials" / str(trial["id"]))) == 1
        resolved = yaml.safe_load((folder / trial["run"] / "recipe.resolved.yaml").read_text())
        assert resolved["quantize"]["calibration"]["samples"] == params["quantize.calibration.samples"]
    finished_before = [t for t in before["trials"] if t["status"] == "ok"]
    assert all(record["trials"][t["id"]] == t for t in finished_before)  # kept as they were, not rerun


@pytest.mark.parametrize(("content", "message"), [
    ("[]", "not a sweep record of schema_version 1"),
    ('{"schema_version": 1, "trials": "x"}', "not a sweep record of schema_version 1"),
    ('{"schema_version": 1, "trials": [{"id": 0}]}', "trials[0] is not a trial record (id, parameters, status)"),
    ("{", "cannot read the sweep record: JSONDecodeError"),
])
def test_a_hostile_sweep_record_is_one_line_for_report_and_resume(cli, write_recipe, tmp_path, content, message):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.json").write_text(content)
    line = fails(cli("report", folder))
    assert line.startswith(f"error: {folder / 'sweep.json'}: {message}"), line
    assert not (folder / "report.html").exists()
    recipe = write_recipe(small_recipe(sweep={"parameters": {"seed": [1]}}))
    line = fails(cli("sweep", recipe, "--out", tmp_path / "runs", "--resume", folder))
    assert line.startswith(f"error: {folder / 'sweep.json'}: {message}"), line
    assert sorted(p.name for p in folder.iterdir()) == ["sweep.json"]  # nothing written beside it
