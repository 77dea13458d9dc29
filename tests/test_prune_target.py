"""Pruning lands on its MACs / parameter target within the recipe's tolerance, or the stage fails
naming the target and what it achieved; results record both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import small_recipe

FAST = {"runtimes": ["torch"], "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0}}


def _recipe(prune: dict, width: int = 16) -> dict:
    recipe = small_recipe(stages=[{"prune": prune}], quantize=None, export=[], verify=FAST)
    recipe["model"]["kwargs"] = {"width": width}
    recipe["model"]["train"]["epochs"] = 1
    return recipe


@pytest.mark.slow
def test_the_achieved_ratio_is_within_the_tolerance_and_recorded(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(_recipe({"target_macs_ratio": 0.6, "iterative_steps": 2}))
    result = cli("run", recipe, "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    results = json.loads(Path(result.stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text())
    info = next(s for s in results["stages"] if s["name"] == "prune")["info"]
    assert info["target"]["target_macs_ratio"] == 0.6 and info["target"]["tolerance"] == 0.05
    achieved = info["target"]["achieved"]
    assert abs(achieved - 0.6) <= 0.05
    assert achieved == round(info["macs_after"] / info["macs_before"], 4)  # what the counts say
    artifacts = {a["name"]: a for a in results["artifacts"]}
    assert artifacts["prune"]["macs"] / artifacts["original"]["macs"] == __import__("pytest").approx(achieved, abs=1e-4)
    assert info["channels"] and all(after < before for before, after in info["channels"].values())


@pytest.mark.slow
def test_a_target_rounding_cannot_reach_fails_naming_target_and_achieved(cli, write_recipe, tmp_path: Path) -> None:
    # channels rounded to multiples of 16 (32 and 64 wide layers): the MACs ratio jumps from 1 to about 0.44
    path = write_recipe(_recipe({"target_macs_ratio": 0.7, "iterative_steps": 1, "round_to": 16}, width=32))
    result = cli("run", path, "--out", tmp_path / "runs")
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    where = re.escape(f"error: {path}: stages[0].prune.target_macs_ratio: ")
    match = re.fullmatch(where + r"target_macs_ratio 0\.7 is not reachable within ±0\.05: the achieved ratio steps "
                         r"from ([0-9.]+) to ([0-9.]+) around it \(channels rounded to multiples of 16\); the "
                         r"closest, ([0-9.]+), is off by ([0-9.]+): change the target, lower round_to, or widen "
                         r"prune\.tolerance", line)
    assert match, line
    above, below, closest, off = (float(g) for g in match.groups())
    assert above > 0.7 > below and closest in (above, below) and abs(off - abs(closest - 0.7)) < 1e-4 and off > 0.05
    assert abs(closest - 0.7) <= abs((above if closest == below else below) - 0.7)  # the closer of the two
    # with a tolerance that admits the closest step, the same recipe runs
    widened = write_recipe(_recipe({"target_macs_ratio": 0.7, "iterative_steps": 1, "round_to": 16,
                                    "tolerance": 0.4}, width=32), "wide.yaml")
    assert cli("run", widened, "--out", tmp_path / "wide").exit_code == 0
