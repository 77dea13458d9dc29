"""A deployment format added by a third party: the TorchScript plugin package in tests/plugins/ (a
format and its runtime backend), pip-installed into a folder of its own, goes through `compress run`
(export, verification with parity) and `compress bench` with no edit to compress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import compress, install_plugin, printed_run, small_recipe

SOURCE = Path(__file__).parent / "plugins" / "compress-torchscript-plugin"
FAST = {"warmup": 0, "min_runs": 3, "min_seconds": 0.0, "threads": [1]}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(SOURCE, tmp_path_factory.mktemp("torchscript-plugin"))


def _recipe(folder: Path, **changes: object) -> Path:
    recipe = small_recipe(**{"quantize": None, "export": ["onnx", "torchscript"],
                             "verify": {"runtimes": ["torch", "onnxruntime", "torchscript"], "latency": FAST},
                             **changes})
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_the_format_and_its_runtime_are_listed_as_plugins(plugin: Path, tmp_path: Path) -> None:
    done = compress(plugin, "plugins", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in done.stdout.splitlines() if "│" in line]
    found = {(kind, name): (dist, status) for kind, name, dist, status, *_ in rows}
    assert found[("format", "torchscript")] == ("compress-torchscript-plugin", "ok")
    assert found[("runtime", "torchscript")] == ("compress-torchscript-plugin", "ok")


@pytest.mark.slow
def test_a_run_exports_and_verifies_the_plugin_format_with_parity(plugin: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = compress(plugin, "run", _recipe(tmp_path), "--out", out, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = printed_run(done.stdout)
    results = json.loads((folder / "results.json").read_text())
    artifacts = {a["name"]: a for a in results["artifacts"]}
    for name in ("original.torchscript", "distill.torchscript"):
        artifact = artifacts[name]
        assert artifact["format"] == "torchscript" and artifact["precision"] == "fp32"
        assert artifact["lineage"][-1] == "export.torchscript"
        assert (folder / artifact["path"]).is_file() and artifact["path"].endswith("model.pt")
        assert artifact["info"]["max_abs_error_vs_torch"] < 1e-4
        assert artifact["macs"] == artifacts[name.split(".")[0]]["macs"]  # carried from its torch model
    rows = {(m["artifact"], m["runtime"]): m for m in results["measurements"]}
    for source in ("original", "distill"):
        ts = rows[(f"{source}.torchscript", "torchscript")]
        reference = rows[(source, "torch")]
        assert ts["status"] == "ok" and ts["latency"]["runs"] >= 3
        assert ts["parity"]["passed"] and ts["parity"]["reference"] == source
        assert ts["parity"]["cosine"] > 0.9999 and ts["parity"]["max_abs_error"] < 1e-4
        assert ts["metric"]["top1"] == reference["metric"]["top1"]  # the same predictions as torch
        # only the runtimes that load the format measured it
        assert (f"{source}.torchscript", "onnxruntime") not in rows and (f"{source}.onnx", "torchscript") not in rows
    assert results["versions"]["compress-torchscript-plugin"] == "0.1.0"  # its libraries, recorded

    # compress bench takes the plugin format's file, and asks for --trust (TorchScript runs code)
    model = folder / artifacts["distill.torchscript"]["path"]
    refused = compress(plugin, "bench", model, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == (f"error: {model}: model.pt is a torchscript file; loading it runs code from the file. "
                              "Pass --trust only if you trust its source\n")
    bench = compress(plugin, "bench", model, "--trust", "--json", "--min-runs", "3", "--min-seconds", "0",
                     "--warmup", "0", "--batch", "4", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    (row,) = json.loads(bench.stdout)
    assert row["runtime"]["name"] == "torchscript" and row["ok"] and row["latency"]["batch_size"] == 4
    assert row["inputs"] == {"input": [4, 1, 8, 8]}  # random inputs from the specs the file carries


def test_validate_refuses_int8_for_a_format_without_a_quantizer(plugin: Path, tmp_path: Path) -> None:
    path = _recipe(tmp_path, quantize={"precision": "int8"})
    done = compress(plugin, "validate", path, cwd=tmp_path)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert line.startswith(f"error: {path}:") and "\n" not in line
    assert line.endswith("quantize: format 'torchscript' cannot make int8 static (its quantizer makes: nothing); "
                         "drop it from export or change quantize")


def test_without_the_plugin_the_format_is_unknown(tmp_path: Path) -> None:
    done = compress(None, "validate", _recipe(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "export[1]: no format plugin named 'torchscript' is installed" in done.stderr
