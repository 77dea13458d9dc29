"""Third-party plugins: a real package, installed the way a user would, found through entry points.

The example plugin (tests/plugins/compress-example-plugin) is installed once into a temporary
folder with pip --target, never into the virtual environment, and `compress` runs in a subprocess
with that folder on PYTHONPATH, so entry-point discovery sees exactly what a user's would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import compress, install_plugin, plugin_env, printed_run, small_recipe

PLUGIN_SOURCE = Path(__file__).parent / "plugins" / "compress-example-plugin"
BUILTINS = {
    "stage": {"prune", "distill"},
    "format": {"onnx", "openvino", "tflite", "torch"},
    "runtime": {"torch", "onnxruntime"},
    "target": {"local"},
    "dataset": {"digits", "npz", "callable"},
    "metric": {"top1"},
}


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, built from a copy (the source folder stays clean) and installed with
    --target into a temporary folder."""
    target = install_plugin(PLUGIN_SOURCE, tmp_path_factory.mktemp("plugin"))
    assert (target / "compress_example_plugin" / "stage.py").is_file()
    assert list(target.glob("compress_example_plugin-*.dist-info"))
    return target


def python(plugin_path: Path | None, code: str, *, cwd: Path) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object on its last stdout line."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=plugin_env(plugin_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write(folder: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _table_rows(stdout: str) -> list[list[str]]:
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) >= 6:  # "│ kind │ name │ from │ status │ install │"
            rows.append(cells[1:-1])
    return rows


# --- compress plugins ---------------------------------------------------------------------------

def test_plugins_lists_the_third_party_stage_and_the_builtins(plugin_path: Path, tmp_path: Path) -> None:
    done = compress(plugin_path, "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {(kind, name): (dist, status) for kind, name, dist, status, *_ in _table_rows(done.stdout)}
    assert rows[("stage", "scale_logits")] == ("compress-example-plugin", "ok")
    for kind, names in BUILTINS.items():
        for name in names:
            assert rows.get((kind, name)) == ("edge-compress", "ok"), (kind, name, done.stdout)
    dist, status = rows[("stage", "broken")]
    assert dist == "compress-example-plugin"
    assert status.startswith("broken: ImportError"), status


def test_without_the_plugin_on_the_path_it_is_not_listed(tmp_path: Path) -> None:
    done = compress(None, "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = {row[1] for row in _table_rows(done.stdout)}
    assert "scale_logits" not in names
    assert {"prune", "distill", "onnx", "torch", "onnxruntime", "local", "digits", "top1"} <= names


# --- compress validate --------------------------------------------------------------------------

@pytest.mark.slow
def test_validate_accepts_the_plugin_stage(plugin_path: Path, tmp_path: Path) -> None:
    recipe = _write(tmp_path, small_recipe(stages=[
        {"prune": {"pruning_ratio": 0.5}}, {"scale_logits": {"factor": 2.0}}]))
    done = compress(plugin_path, "validate", recipe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "valid (prune, scale_logits;" in done.stdout


def test_validate_checks_the_plugin_config_with_its_own_schema(plugin_path: Path, tmp_path: Path) -> None:
    recipe = _write(tmp_path, small_recipe(stages=[
        {"prune": {"pruning_ratio": 0.5}}, {"scale_logits": {"factor": -1}}]))
    done = compress(plugin_path, "validate", recipe, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "stages[1].scale_logits.factor" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_validate_rejects_unknown_plugin_config_keys(plugin_path: Path, tmp_path: Path) -> None:
    recipe = _write(tmp_path, small_recipe(stages=[{"scale_logits": {"factr": 2.0}}]))
    done = compress(plugin_path, "validate", recipe, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "stages[0].scale_logits.factr" in done.stderr


def test_a_misspelt_stage_suggests_the_plugin(plugin_path: Path, tmp_path: Path) -> None:
    recipe = _write(tmp_path, small_recipe(stages=[{"scale_logit": {"factor": 2.0}}]))
    done = compress(plugin_path, "validate", recipe, cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean 'scale_logits'" in done.stderr
    assert "stages[0]" in done.stderr


@pytest.mark.slow
def test_a_broken_plugin_fails_only_when_named(plugin_path: Path, tmp_path: Path) -> None:
    named = _write(tmp_path, small_recipe(stages=[{"broken": {}}]), "named.yaml")
    done = compress(plugin_path, "validate", named, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "failed to import" in done.stderr
    assert "'broken'" in done.stderr and "compress-example-plugin" in done.stderr
    assert "stages[0]" in done.stderr
    assert "Traceback" not in done.stderr

    # The broken entry point is installed next to scale_logits; a recipe that does not name it
    # must never import it.
    unnamed = _write(tmp_path, small_recipe(stages=[{"scale_logits": {"factor": 3.0}}]), "unnamed.yaml")
    done = compress(plugin_path, "validate", unnamed, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_broken_plugin_does_not_break_the_schema(plugin_path: Path, tmp_path: Path) -> None:
    done = compress(plugin_path, "schema", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    variants = json.loads(done.stdout)["properties"]["stages"]["items"]["oneOf"]
    names = {next(iter(v["properties"])) for v in variants}
    assert {"prune", "distill", "scale_logits"} <= names
    assert "broken" not in names


# --- compress run -------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_with_the_plugin_stage(plugin_path: Path, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    recipe = _write(tmp_path, small_recipe(stages=[{"scale_logits": {"factor": 2.0}}]))
    out = tmp_path / "runs"
    done = compress(plugin_path, "run", recipe, "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    folders = [p for p in (out / "small").iterdir() if p.is_dir() and p.name[0].isdigit()]
    assert folders == [printed_run(done.stdout)]  # the one run, finished
    results = json.loads((folders[0] / "results.json").read_text())
    assert results["status"] == "complete"
    stages = {s["name"]: s for s in results["stages"]}
    assert stages["scale_logits"]["info"] == {"factor": 2.0}
    assert stages["scale_logits"]["cached"] is False

    # The stage's artifact reloads through the factory + structure + weights: the last linear
    # layer is exactly twice the original's (x2 is exact in floating point), the rest unchanged.
    records = {r["name"]: r for r in results["artifacts"]}
    assert {"original", "scale_logits"} <= set(records)
    assert records["scale_logits"]["lineage"] == ["original", "scale_logits"]
    weights = {name: load_file(str(folders[0] / records[name]["path"] / "model.safetensors"))
               for name in ("original", "scale_logits")}
    before, after = weights["original"], weights["scale_logits"]
    assert set(before) == set(after)
    for key in before:
        expected = before[key] * 2 if key.startswith("classifier.") else before[key]
        assert (after[key] == expected).all(), key


# --- lazy imports -------------------------------------------------------------------------------

def test_the_registry_imports_a_plugin_only_when_it_is_loaded(plugin_path: Path, tmp_path: Path) -> None:
    found = python(plugin_path, """
        import json, sys
        from compress import registry

        names = registry.names("compress.stages")
        watched = ("compress.distill.stage", "compress.prune.stage", "compress_example_plugin.stage",
                   "compress_example_plugin.broken")
        before = {m: m in sys.modules for m in watched}
        registry.load("compress.stages", "scale_logits")
        after = {m: m in sys.modules for m in watched}
        print(json.dumps({"names": names, "before": before, "after": after}))
    """, cwd=tmp_path)
    assert {"prune", "distill", "scale_logits", "broken"} <= set(found["names"])
    assert not any(found["before"].values()), found["before"]
    assert found["after"] == {"compress.distill.stage": False, "compress.prune.stage": False,
                              "compress_example_plugin.stage": True, "compress_example_plugin.broken": False}


@pytest.mark.slow
def test_validate_imports_only_the_stages_a_recipe_names(plugin_path: Path, tmp_path: Path) -> None:
    recipe = _write(tmp_path, small_recipe(stages=[{"prune": {"pruning_ratio": 0.5}}]))
    found = python(plugin_path, f"""
        import json, sys
        from compress.cli import main

        try:
            main(["validate", {str(recipe)!r}])
        except SystemExit as exc:
            code = exc.code
        print()
        print(json.dumps({{"code": code, "modules": sorted(m for m in sys.modules if m.startswith("compress"))}}))
    """, cwd=tmp_path)
    assert found["code"] == 0
    assert "compress.prune.stage" in found["modules"]
    assert "compress.distill.stage" not in found["modules"]
    assert not [m for m in found["modules"] if m.startswith("compress_example_plugin")]


def test_help_does_not_import_torch(tmp_path: Path) -> None:
    found = python(None, """
        import json, sys
        from compress.cli import main

        try:
            main(["--help"])
        except SystemExit as exc:
            code = exc.code
        heavy = ("torch", "torch_pruning", "onnx", "onnxruntime", "sklearn")
        print()
        print(json.dumps({"code": code, "imported": [m for m in heavy if m in sys.modules]}))
    """, cwd=tmp_path)
    assert found["code"] == 0
    assert "torch" not in found["imported"], found["imported"]
    assert found["imported"] == []
