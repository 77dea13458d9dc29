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
from typing import Any

import numpy as np

from compress.errors import StageError


@dataclass(frozen=True)
class Budget:
    """`max_accuracy_drop` from the recipe: 0.01 is one point; "1%" is 1% of the parent's score."""

    value: float
    relative: bool
    lower_is_better: bool = False  # perplexity: a drop is a rise


    @classmethod
    def parse(cls, raw: float | str, lower_is_better: bool = False) -> Budget:
        if isinstance(raw, str):
            text = raw.strip()
            if not text.endswith("%"):
                return cls(float(text), relative=False, lower_is_better=lower_is_better)
            return cls(float(text[:-1]) / 100.0, relative=True, lower_is_better=lower_is_better)
        return cls(float(raw), relative=False, lower_is_better=lower_is_better)

    def drop(self, reference: float, score: float) -> float:
        """How much worse `score` is than `reference`; positive is worse."""
        return score - reference if self.lower_is_better else reference - score

    def allowed_drop(self, reference: float) -> float:
        return self.value * abs(reference) if self.relative else self.value

    def met(self, reference: float, score: float) -> bool:
        """A drop at the budget passes (up to float rounding: 0.90 - 0.89 is 0.01000000000000001);
        anything over fails; NaN never meets a budget."""
        from compress.gates import at_most

        return at_most(self.drop(reference, score), self.allowed_drop(reference))

    def describe(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


@dataclass
class Validation:
    """What the accuracy-aware search scores candidates with."""

    x: np.ndarray
    y: np.ndarray | None
    metric: Callable[..., float]
    budget: Budget
    input_name: str
    runtime: str  # the runtime that scores candidates of this format
    reference: np.ndarray | None = None  # the original model's outputs on x (for the cosine metric)

    def score(self, path: Path, batch_size: int = 64) -> float:
        from runtimes.agent import collect_outputs, load_backend

        backend = load_backend(self.runtime, str(path))
        outputs = collect_outputs(backend, {self.input_name: self.x}, batch_size)
        return float(self.metric(outputs[0], self.y, reference=self.reference))


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
