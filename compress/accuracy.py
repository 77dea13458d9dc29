"""Accuracy-aware int8: keep the layers most responsible for a miss in float until the artifact
is within the recipe's budget.

The search runs on the validation data (the calibration split), never the test split that the
report uses: tuning and reporting on the same samples overfits. When the budget cannot be met,
the best artifact found is kept and the stage fails, saying so.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress.budget import Budget
from compress.errors import StageError

if TYPE_CHECKING:
    from compress.contracts import Metric, RunOutputs


@dataclass
class Validation:
    """What accuracy-aware int8 of one format scores candidates with (compress.contracts.Validation):
    its scoring runtime run in this process on the calibration split, never the test split."""

    x: np.ndarray
    y: np.ndarray | None
    metric: Metric
    budget: Budget
    input_name: str
    runtime: str  # the runtime that scores candidates of this format
    run: RunOutputs
    reference: np.ndarray | None = None  # the original model's outputs on x (for the cosine metric)
    input_transpose: list[int] | None = None  # the format's input layout (channels-last)
    batch_size: int = 64

    def score(self, path: Path) -> float:
        x = self.x if not self.input_transpose else np.ascontiguousarray(self.x.transpose(self.input_transpose))
        outputs = np.concatenate([self.run(self.runtime, path, {self.input_name: x[i:i + self.batch_size]})[0]
                                  for i in range(0, len(x), self.batch_size)])
        return float(self.metric(outputs, self.y, reference=self.reference))

    def met(self, reference: float, score: float) -> bool:
        return self.budget.met(reference, score)

    def search(self, quantize: Callable[[list[str], Path], None], candidates: list[str], reference: float,
               dest: Path) -> SearchReport:
        return greedy_keep_in_float(quantize, candidates, reference, self, dest)

    def report(self, reference: float, score: float, kept_in_float: list[str],
               steps: list[dict[str, Any]]) -> SearchReport:
        return SearchReport(reference=reference, budget=self.budget.describe(),
                            allowed_drop=self.budget.allowed_drop(reference), kept_in_float=kept_in_float,
                            met=self.met(reference, score), score=score, steps=steps)


@dataclass
class SearchReport:
    reference: float
    budget: str
    allowed_drop: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    kept_in_float: list[str] = field(default_factory=list)
    met: bool = False
    score: float = float("nan")

    def as_info(self) -> dict[str, Any]:
        return {"accuracy_aware": {
            "validation_metric_fp32": round(self.reference, 6), "budget": self.budget,
            "allowed_drop": round(self.allowed_drop, 6), "validation_metric_int8": round(self.score, 6),
            "budget_met": self.met, "kept_in_float": self.kept_in_float, "steps": self.steps}}


def greedy_keep_in_float(quantize: Callable[[list[str], Path], None], candidates: list[str], reference: float,
                         validation: Validation, dest: Path, max_steps: int = 32) -> SearchReport:
    """Quantize with every candidate, then, if the budget is missed, rank candidates by how much
    quantizing each one alone costs, and keep the worst in float one by one until the budget is met.
    `quantize(excluded, path)` writes an int8 model leaving `excluded` in float. The best model
    found is written to `dest`."""
    report = SearchReport(reference=reference, budget=validation.budget.describe(),
                          allowed_drop=validation.budget.allowed_drop(reference))
    with tempfile.TemporaryDirectory(prefix="compress-aa-") as scratch:
        work = Path(scratch)
        best_path = work / "full" / dest.name

        def trial(excluded: list[str], name: str) -> float:
            path = work / name / dest.name  # a file, or a folder (OpenVINO IR)
            path.parent.mkdir()
            quantize(excluded, path)
            return validation.score(path)

        score = trial([], "full")
        best_score = score
        report.steps.append({"kept_in_float": [], "validation_metric": round(score, 6)})
        if not validation.budget.met(reference, score):
            sensitivity = {}
            for index, candidate in enumerate(candidates):  # quantize one layer at a time
                alone = trial([c for c in candidates if c != candidate], f"alone{index}")
                sensitivity[candidate] = validation.budget.drop(reference, alone)
            ranking = sorted(candidates, key=lambda c: sensitivity[c], reverse=True)
            report.steps[0]["sensitivity"] = {c: round(sensitivity[c], 6) for c in ranking}
            excluded: list[str] = []
            for step, candidate in enumerate(ranking[:max_steps]):
                excluded.append(candidate)
                score = trial(list(excluded), f"step{step}")
                report.steps.append({"kept_in_float": list(excluded), "validation_metric": round(score, 6)})
                budget = validation.budget
                if budget.drop(reference, score) < budget.drop(reference, best_score) or budget.met(reference, score):
                    best_score, best_path = score, work / f"step{step}" / dest.name
                    report.kept_in_float = list(excluded)
                if validation.budget.met(reference, score):
                    break
        report.score = best_score
        report.met = validation.budget.met(reference, best_score)
        if best_path.is_dir():
            shutil.copytree(best_path, dest)
        else:
            shutil.copy2(best_path, dest)
    return report


def budget_missed(report: SearchReport, artifact: str, kept_at: Path, file: str | None = None) -> StageError:
    return StageError(
        f"{artifact}: int8 cannot meet max_accuracy_drop {report.budget}: the best found scores "
        f"{report.score:.4f} against {report.reference:.4f} in fp32 on the validation split, keeping "
        f"{len(report.kept_in_float)} layer(s) in float ({', '.join(report.kept_in_float) or 'none'}); "
        f"it is kept at {kept_at}", file=file, field="quantize.max_accuracy_drop")
