"""End to end: a small recipe through every stage, the run folder, results.json and --resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import kept_outputs, plain_cosine, printed_run, small_recipe


def _run(cli, recipe: Path, out: Path, *extra: str):
    return cli("run", recipe, "--out", out, *extra)


def _printed(result) -> tuple[Path, dict]:
    """The run folder a run printed (`results: <folder>/results.json`), and its results."""
    folder = printed_run(result.stdout)
    return folder, json.loads((folder / "results.json").read_text())


def _hashes(folder: Path, results: dict) -> dict[str, str]:
    """Each artifact's sha256, computed here from the run folder's files (names and bytes, in order)."""
    found = {}
    for artifact in results["artifacts"]:
        path = folder / artifact["path"]
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            if path.is_dir():
                digest.update(str(file.relative_to(path)).encode())
            digest.update(file.read_bytes())
        found[artifact["name"]] = digest.hexdigest()
    return found


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, dict]:
    from click.testing import CliRunner

    from compress.cli import main

    root = tmp_path_factory.mktemp("e2e")
    recipe = root / "recipe.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(small_recipe()))
    result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(root / "runs")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return _printed(result)


@pytest.mark.slow
def test_run_folder_holds_everything(finished_run):
    import platform
    from importlib.metadata import version

    import yaml

    from compress.recipe import Recipe
    from compress.report import render_table
    from compress.results import Results

    folder, results = finished_run
    assert sorted(p.name for p in folder.iterdir()) == ["artifacts", "recipe.resolved.yaml", "report.html",
                                                        "results.json", "run.log", "table.txt", "verify",
                                                        "versions.json"]
    assert sorted(p.name for p in (folder / "verify").iterdir()) == sorted(
        ["inputs.npz"] + [f"{m['artifact']}.{m['runtime']}.local.npz" for m in results["measurements"]])
    # every artifact the results name is in the run folder, and nothing else is
    assert sorted(p.name for p in (folder / "artifacts").iterdir()) == sorted(
        Path(a["path"]).parts[1] for a in results["artifacts"])
    assert all((folder / a["path"]).exists() for a in results["artifacts"])
    # the table a person reads is the one results.json renders to
    assert (folder / "table.txt").read_text() == render_table(Results.model_validate(results))
    # and so is the page: report.html is written from results.json alone
    from compress.html_report import run_report

    assert (folder / "report.html").read_text() == run_report(Results.model_validate(results))
    # the resolved recipe is the recipe as written, every default filled in and quantize.mode auto resolved
    resolved = yaml.safe_load((folder / "recipe.resolved.yaml").read_text())
    written = Recipe.model_validate(small_recipe()).model_dump(mode="json")
    assert written["quantize"]["mode"] == "auto" and resolved["quantize"]["mode"] == "static"  # a CNN: static
    written["quantize"]["mode"] = "static"
    assert resolved == written
    assert resolved["stages"][0]["prune"]["target_macs_ratio"] == 0.6
    # versions are the installed ones, read here independently
    versions = json.loads((folder / "versions.json").read_text())
    assert versions["python"] == platform.python_version()
    for name in ("torch", "onnxruntime", "numpy", "torch-pruning", "onnx"):
        assert versions[name] == version(name), name
    assert results["versions"] == versions
    log = (folder / "run.log").read_text()
    assert f"run {results['run_id']} of " in log
    # beside the run: its cache and the output folder's lock, nothing half-written
    assert sorted(p.name for p in folder.parent.iterdir()) == [".lock", folder.name, "cache"]


def test_every_artifact_is_verified_on_each_runtime_that_loads_it(finished_run):
    folder, results = finished_run
    assert results["schema_version"] == 1
    assert results["status"] == "complete"
    names = [a["name"] for a in results["artifacts"]]
    assert names == ["original", "prune", "distill", "original.onnx", "distill.onnx", "distill.int8.onnx"]
    pairs = {(m["artifact"], m["runtime"]) for m in results["measurements"]}
    assert pairs == {("original", "torch"), ("prune", "torch"), ("distill", "torch"),
                     ("original.onnx", "onnxruntime"), ("distill.onnx", "onnxruntime"),
                     ("distill.int8.onnx", "onnxruntime")}
    for m in results["measurements"]:
        assert m["status"] == "ok", m
        assert 0.0 <= m["metric"]["top1"] <= 1.0
        lat = m["latency"]
        assert lat["runs"] >= 3 and lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert m["device"]["machine"]
    for artifact in results["artifacts"]:
        assert (folder / artifact["path"]).exists()
        assert artifact["size_bytes"] > 0 and len(artifact["sha256"]) == 64


def test_agreement_and_parity_are_what_the_kept_outputs_give(finished_run):
    """Recomputed here in plain numpy from the outputs each measurement kept, not with compress's code."""
    folder, results = finished_run
    original = kept_outputs(folder, "original", "torch")
    assert original.shape == (len(original), 10) and original.std(axis=0).min() > 0  # a live model
    for m in results["measurements"]:
        outputs = kept_outputs(folder, m["artifact"], m["runtime"])
        assert m["agreement"] == pytest.approx(float(np.mean(outputs.argmax(1) == original.argmax(1))), abs=1e-12)
    int8 = next(m for m in results["measurements"] if m["artifact"] == "distill.int8.onnx")
    parent = kept_outputs(folder, "distill", "torch")  # the torch model it was made from
    quantized = kept_outputs(folder, "distill.int8.onnx", "onnxruntime").astype(np.float64)
    cosine = plain_cosine(quantized, parent)
    assert int8["parity"]["cosine"] == pytest.approx(cosine, abs=1e-6)
    assert int8["parity"]["max_abs_error"] == pytest.approx(np.abs(quantized - parent).max(), rel=1e-4)
    assert 0.9 < cosine < 1 - 1e-6  # int8 changed the outputs, a little
    assert int8["parity"]["agreement"] == pytest.approx(np.mean(quantized.argmax(1) == parent.argmax(1)))


def test_original_agrees_with_itself_and_onnx_matches_torch(finished_run):
    _, results = finished_run
    by_artifact = {m["artifact"]: m for m in results["measurements"]}
    assert by_artifact["original"]["agreement"] == 1.0
    assert by_artifact["original.onnx"]["metric"]["top1"] == pytest.approx(by_artifact["original"]["metric"]["top1"])
    assert by_artifact["distill.onnx"]["metric"]["top1"] == pytest.approx(by_artifact["distill"]["metric"]["top1"])


def test_pruning_meets_its_macs_target_and_int8_is_smaller(finished_run):
    folder, results = finished_run
    artifacts = {a["name"]: a for a in results["artifacts"]}
    assert artifacts["prune"]["macs"] <= 0.6 * artifacts["original"]["macs"]
    assert artifacts["distill"]["macs"] == artifacts["prune"]["macs"]
    # this model is tiny (graph overhead dominates); the quickstart test checks the 3x size ratio
    assert artifacts["distill.int8.onnx"]["size_bytes"] < artifacts["distill.onnx"]["size_bytes"]
    assert artifacts["distill.int8.onnx"]["lineage"] == ["original", "prune", "distill", "export.onnx",
                                                         "quantize.onnxruntime"]
    model = onnx.load(str(folder / artifacts["distill.int8.onnx"]["path"]))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [t for t in model.graph.initializer if t.name.endswith("weight_quantized")]
    # 4 weighted layers; the first (the first-layer policy, under 10% of the MACs) stays in float
    first = artifacts["distill.int8.onnx"]["info"]["first_layers_in_float"]
    assert len(first) == 1 and artifacts["distill.int8.onnx"]["info"]["int8_macs_share"] > 0.9
    assert len(weights) == 3 and all(t.data_type == onnx.TensorProto.INT8 for t in weights)
    assert results["summary"]["final_macs_ratio"] <= 0.6


def test_stage_records(finished_run):
    _, results = finished_run
    stages = {s["name"]: s for s in results["stages"]}
    assert stages["prune"]["info"]["macs_ratio"] <= 0.6
    assert len(stages["distill"]["info"]["epoch_losses"]) == 1
    assert not any(s["cached"] for s in results["stages"])


@pytest.mark.slow
def test_resume_skips_unchanged_stages_and_reruns_changed_ones(cli, write_recipe, tmp_path):
    recipe = write_recipe(small_recipe(verify={"runtimes": ["torch"], "latency": {"warmup": 0, "min_runs": 1,
                                                                                   "min_seconds": 0}}))
    out = tmp_path / "runs"
    first_run = _run(cli, recipe, out)
    assert first_run.exit_code == 0
    first_folder, first = _printed(first_run)
    first_hashes = _hashes(first_folder, first)
    assert first_hashes == {a["name"]: a["sha256"] for a in first["artifacts"]}  # what results.json says is true

    resumed = _run(cli, recipe, out, "--resume")
    assert resumed.exit_code == 0
    second_folder, second = _printed(resumed)
    assert second_folder != first_folder
    assert all(s["cached"] for s in second["stages"])
    assert _hashes(second_folder, second) == first_hashes  # the very same files, re-hashed

    changed = _run(cli, recipe, out, "--resume", "--set", "stages[1].distill.epochs=2")
    assert changed.exit_code == 0
    third_folder, third = _printed(changed)
    cached = {s["name"]: s["cached"] for s in third["stages"]}
    assert cached["original"] and cached["prune"]
    assert not cached["distill"] and not cached["export.onnx"] and not cached["quantize.onnx"]
    third_hashes = _hashes(third_folder, third)
    assert third_hashes["prune"] == first_hashes["prune"]
    assert third_hashes["distill"] != first_hashes["distill"]  # retrained: other weights


@pytest.mark.slow
def test_upgrading_a_library_a_step_uses_rebuilds_that_step_on_resume(cli, write_recipe, tmp_path, monkeypatch):
    from compress import versions

    recipe = write_recipe(small_recipe(verify={"runtimes": ["torch"], "latency": {"warmup": 0, "min_runs": 1,
                                                                                   "min_seconds": 0}}))
    out = tmp_path / "runs"
    assert _run(cli, recipe, out).exit_code == 0
    real = versions.installed

    def upgraded(distribution: str) -> str | None:  # torch-pruning "upgraded"; nothing else changed
        return "99.0" if distribution == "torch-pruning" else real(distribution)

    monkeypatch.setattr(versions, "installed", upgraded)
    resumed = _run(cli, recipe, out, "--resume")
    assert resumed.exit_code == 0
    _, results = _printed(resumed)
    cached = {s["name"]: s["cached"] for s in results["stages"]}
    assert cached["original"]  # trained with torch alone: reused
    assert not cached["prune"]  # pruned with torch-pruning: rebuilt, and what came from it
    assert not cached["distill"] and not cached["export.onnx"] and not cached["quantize.onnx"]
    assert results["versions"]["torch-pruning"] == "99.0"


@pytest.mark.slow
def test_resume_rebuilds_a_cached_file_whose_bytes_changed(cli, write_recipe, tmp_path):
    recipe = write_recipe(small_recipe(verify={"runtimes": ["onnxruntime"], "latency": {"warmup": 0, "min_runs": 1,
                                                                                         "min_seconds": 0}}))
    out = tmp_path / "runs"
    first_run = _run(cli, recipe, out)
    assert first_run.exit_code == 0
    _, first = _printed(first_run)
    record = next(a for a in first["artifacts"] if a["name"] == "distill.onnx")
    cached_file = out / "small" / "cache" / record["id"] / "model.onnx"
    cached_file.write_bytes(cached_file.read_bytes()[:-10] + b"0123456789")  # damaged in place
    resumed = _run(cli, recipe, out, "--resume")
    assert resumed.exit_code == 0
    folder, results = _printed(resumed)
    cached = {s["artifact"]: s["cached"] for s in results["stages"]}
    assert not cached["distill.onnx"] and cached["distill"]  # rebuilt from its (intact) parent
    assert _hashes(folder, results)["distill.onnx"] == record["sha256"]  # the same file again
    log = (folder / "run.log").read_text()
    assert "no longer match the sha256 recorded for them: rebuilding it" in log


@pytest.mark.slow
def test_same_recipe_twice_gives_the_same_accuracy(cli, write_recipe, tmp_path):
    recipe = write_recipe(small_recipe(export=["onnx"], quantize=None, stages=[],
                                       verify={"runtimes": ["onnxruntime"],
                                               "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0}}))
    scores = []
    for out in (tmp_path / "a", tmp_path / "b"):
        result = _run(cli, recipe, out)
        assert result.exit_code == 0
        scores.append([m["metric"]["top1"] for m in _printed(result)[1]["measurements"]])
    assert scores[0] == scores[1]


@pytest.mark.slow
def test_failed_stage_is_not_cached_and_leaves_no_artifacts(cli, write_recipe, tmp_path):
    recipe_data = small_recipe()
    recipe_data["stages"] = [{"prune": {"target_macs_ratio": 0.001, "iterative_steps": 1}}]
    recipe = write_recipe(recipe_data)
    out = tmp_path / "runs"
    result = _run(cli, recipe, out)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {recipe}: stages[0].prune.target_macs_ratio: cannot reach target_macs_ratio 0.001")
    failed = [p for p in (out / "small").iterdir() if p.name.endswith(".failed")]
    assert len(failed) == 1
    assert (failed[0] / "run.log").is_file()
    assert not (failed[0] / "artifacts").exists()
    assert not any(p.name.endswith(".partial") for p in (out / "small").iterdir())
    cache = out / "small" / "cache"
    entries = [p for p in cache.iterdir()]
    # only the original model (trained before the failing stage) is cached, and it is complete
    assert len(entries) == 1 and (entries[0] / "artifact.json").is_file()


@pytest.mark.slow
def test_a_parity_failure_is_reported_by_artifact_and_runtime(cli, write_recipe, tmp_path):
    recipe = small_recipe(stages=[], verify={
        "runtimes": ["onnxruntime", "openvino"], "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0},
        "parity": {"int8": {"max_abs_error": 1e-9, "min_cosine": 0.5, "min_agreement": 0.5}}})
    out = tmp_path / "runs"
    result = _run(cli, write_recipe(recipe), out)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: parity failed: original.int8.onnx on onnxruntime (local, 1t): max abs error ")
    assert last.endswith("> 1e-09 (and 1 more)")  # the same artifact on OpenVINO
    _, results = _printed(result)
    checks = {(m["artifact"], m["runtime"]): m["parity"] for m in results["measurements"]}
    assert checks[("original.onnx", "onnxruntime")]["passed"]
    assert checks[("original.onnx", "openvino")]["passed"]
    assert not checks[("original.int8.onnx", "openvino")]["passed"]
    assert checks[("original.int8.onnx", "onnxruntime")]["thresholds"]["max_abs_error"] == 1e-9
    assert len(results["summary"]["parity_failures"]) == 2


@pytest.mark.slow
def test_recipe_gates_are_checked_at_the_end_of_the_run(cli, write_recipe, tmp_path):
    recipe = small_recipe(stages=[], verify={"runtimes": ["onnxruntime"],
                                             "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0}},
                          gates={"max_size_mb": 0.001, "max_accuracy_drop": 0.5, "artifacts": ["*.int8.*"]})
    out = tmp_path / "runs"
    result = _run(cli, write_recipe(recipe), out)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: gate failed: original.int8.onnx: size ")
    _, results = _printed(result)
    gates = {(g["gate"], g["artifact"]): g["passed"] for g in results["summary"]["gates"]}
    assert gates[("max_size_mb", "original.int8.onnx")] is False
    assert gates[("max_accuracy_drop", "original.int8.onnx")] is True
    assert "gates: 2 of 3 checks passed" in result.stdout


def test_bad_gates_are_recipe_errors(cli, write_recipe):
    result = cli("validate", write_recipe(small_recipe(gates={"max_size_mbb": 1})))
    assert result.exit_code == 2
    assert "gates.max_size_mbb: unknown key 'max_size_mbb' (did you mean 'max_size_mb'?)" in result.stderr
    result = cli("validate", write_recipe(small_recipe(gates={"max_accuracy_drop": "one point"})))
    assert result.exit_code == 2 and "gates.max_accuracy_drop" in result.stderr
    # a budget that would pass anything turns the gate off: refused, for the gate and for int8
    for section, budget in (("gates", 1.0), ("gates", "100%"), ("quantize", 1.5)):
        recipe = small_recipe(**{section: {**(small_recipe().get(section) or {}), "max_accuracy_drop": budget}})
        result = cli("validate", path := write_recipe(recipe))
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {path}:"), result.stderr
        assert f"{section}.max_accuracy_drop: " in result.stderr and "would pass anything" in result.stderr


NET = '''
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.linear(x.flatten(1))
'''


def _cached_original(cli, recipe: Path, out: Path) -> bool:
    result = _run(cli, recipe, out, "--resume")
    assert result.exit_code == 0, result.output[-2000:]
    _, results = _printed(result)
    return next(s["cached"] for s in results["stages"] if s["name"] == "original")


@pytest.mark.slow
@pytest.mark.parametrize("change", ["factory source", "training data", "weights file"])
def test_resume_rebuilds_the_original_when_its_source_its_data_or_its_weights_change(cli, write_recipe, tmp_path,
                                                                                      change):
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    (tmp_path / "cachenet.py").write_text(NET)
    digits = load_digits()
    x, y = (digits.images[:, None] / 16.0).astype(np.float32), digits.target.astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    model = {"factory": "cachenet:Net", "input": {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}}
    if change == "weights file":
        save_file(_net_state(), tmp_path / "w.safetensors")
        model["weights"] = "w.safetensors"
    else:
        model["train"] = {"epochs": 1, "lr": 0.01, "batch_size": 64}
    recipe = write_recipe(small_recipe(model=model, data={"source": "npz", "path": "data.npz", "batch_size": 64},
                                       stages=[], quantize=None, export=[],
                                       verify={"runtimes": ["torch"], "latency": {"warmup": 0, "min_runs": 1,
                                                                                  "min_seconds": 0}}))
    out = tmp_path / "runs"
    assert _run(cli, recipe, out).exit_code == 0
    assert _cached_original(cli, recipe, out)  # nothing changed: reused
    if change == "factory source":
        (tmp_path / "cachenet.py").write_text(NET + "\n# edited\n")
    elif change == "training data":
        x[0, 0, 0, 0] += 0.5  # one pixel of one image
        np.savez(tmp_path / "data.npz", x=x, y=y)
    else:
        state = _net_state()
        state["linear.bias"][0] += 1.0
        save_file(state, tmp_path / "w.safetensors")
    assert not _cached_original(cli, recipe, out)  # rebuilt
    assert _cached_original(cli, recipe, out)  # and reused from then on


def _net_state() -> dict:
    import torch

    torch.manual_seed(0)
    return {"linear.weight": torch.randn(10, 64) * 0.1, "linear.bias": torch.zeros(10)}


@pytest.mark.slow
def test_a_cleanup_or_a_log_that_fails_in_turn_never_replaces_the_error_or_prints_a_traceback(
        cli, write_recipe, tmp_path, monkeypatch):
    """Out of memory, the cache's sweep after a failed step and the run log's own writes can fail
    too (seen under an address-space limit): the user still gets the step's one-line error."""
    import logging

    from compress.cache import ArtifactCache

    calls = []
    real_sweep = ArtifactCache.sweep

    def sweep_then_fail(self):
        calls.append(self.root)
        if len(calls) > 1:  # the sweep after the failure
            raise OSError(12, "Cannot allocate memory")
        real_sweep(self)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(ArtifactCache, "sweep", sweep_then_fail)
    recipe = small_recipe(stages=[{"prune": {"target_macs_ratio": 0.001, "iterative_steps": 1}}])
    path = write_recipe(recipe)
    monkeypatch.setattr(logging.Formatter, "formatTime", no_memory)  # every run.log record fails to format
    monkeypatch.setattr(logging, "raiseExceptions", True)  # Python's default: the command must turn it off
    result = _run(cli, path, tmp_path / "runs")
    assert result.exit_code == 1 and len(calls) == 2
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: {path}: stages[0].prune.target_macs_ratio: cannot reach target_macs_ratio 0.001")
