"""Accuracy-aware int8: keep the layers most responsible for a miss in float until the artifact
is within the recipe's budget.

The search runs on the validation data (the calibration split), never the test split that the
report uses: tuning and reporting on the same samples overfits. When the budget cannot be met,
the best artifact found is kept and the stage fails, saying so.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress.budget import Budget
from compress.interrupts import deliver_held

if TYPE_CHECKING:
    from compress.contracts import Metric, RunOutputs


ONE_PASS_ACTIVATIONS = "per-layer error between float and int8 activations, one pass"


@dataclass
class Validation:
    """What accuracy-aware int8 of one format scores candidates with (compress.contracts.Validation):
    its scoring runtime run in this process on the calibration split, never the test split; and the
    bounds of its search."""

    x: dict[str, np.ndarray]  # samples per input, in the model's order (an array: one input, `input_name`)
    y: np.ndarray | None
    metric: Metric
    budget: Budget
    runtime: str  # the runtime that scores candidates of this format
    run: RunOutputs
    reference: np.ndarray | None = None  # the original model's outputs on x (for the cosine metric)
    input_name: str = "input"  # the name of x's one input, when x is an array
    input_transpose: list[int] | None = None  # the format's input layout (channels-last)
    batch_size: int = 64
    max_trials: int = 24
    max_seconds: float = 900.0
    progress: Callable[[str], None] = lambda _line: None

    def __post_init__(self) -> None:
        if isinstance(self.x, np.ndarray):
            self.x = {self.input_name: self.x}

    def feeds(self, count: int | None = None) -> dict[str, np.ndarray]:
        """The first `count` samples of every input, in the format's layout."""
        return {name: (array[:count] if not self.input_transpose
                       else np.ascontiguousarray(array[:count].transpose(self.input_transpose)))
                for name, array in self.x.items()}

    def __len__(self) -> int:
        return len(next(iter(self.x.values())))

    def score(self, path: Path) -> float:
        x = self.feeds()
        outputs = np.concatenate([self.run(self.runtime, path, {k: v[i:i + self.batch_size] for k, v in x.items()})[0]
                                  for i in range(0, len(self), self.batch_size)])
        return float(self.metric(outputs, self.y, reference=self.reference))

    def met(self, reference: float, score: float) -> bool:
        return self.budget.met(reference, score)

    def search(self, quantize: Callable[[list[str], Path], None], candidates: list[str], reference: float,
               dest: Path, ranking: Callable[[Path], list[str]] | None = None,
               ranked_by: str = ONE_PASS_ACTIVATIONS) -> SearchReport:
        return keep_in_float_search(quantize, candidates, reference, self, dest, ranking=ranking, ranked_by=ranked_by)

    def report(self, reference: float, score: float, kept_in_float: list[str],
               steps: list[dict[str, Any]]) -> SearchReport:
        return SearchReport(reference=reference, budget=self.budget.describe(),
                            allowed_drop=self.budget.allowed_drop(reference), kept_in_float=kept_in_float,
                            met=self.met(reference, score), score=score, steps=steps, trials=len(steps),
                            stopped="the format's own search")


@dataclass
class SearchReport:
    reference: float
    budget: str
    allowed_drop: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    kept_in_float: list[str] = field(default_factory=list)
    met: bool = False
    score: float = float("nan")
    trials: int = 0
    stopped: str = ""  # why the search ended: budget met, candidates exhausted, max_trials, max_seconds
    ranked_by: str = ""

    def as_info(self) -> dict[str, Any]:
        return {"accuracy_aware": {
            "validation_metric_fp32": round(self.reference, 6), "budget": self.budget,
            "allowed_drop": round(self.allowed_drop, 6), "validation_metric_int8": round(self.score, 6),
            "budget_met": self.met, "kept_in_float": self.kept_in_float, "trials": self.trials,
            "stopped": self.stopped, "ranked_by": self.ranked_by, "steps": self.steps}}


class _Trials:
    """Quantized candidates, each scored, within the search's bounds."""

    def __init__(self, quantize: Callable[[list[str], Path], None], validation: Validation, work: Path,
                 file_name: str, reference: float) -> None:
        self.quantize, self.validation, self.work, self.file_name = quantize, validation, work, file_name
        self.reference = reference
        self.count = 0
        self.deadline = time.monotonic() + validation.max_seconds

    def left(self) -> int:
        return 0 if time.monotonic() >= self.deadline else self.validation.max_trials - self.count

    def run(self, excluded: list[str], what: str) -> tuple[float, Path]:
        deliver_held()  # a signal held while the last candidate was quantized stops the search here
        self.count += 1
        path = self.work / f"trial{self.count}" / self.file_name  # a file, or a folder (OpenVINO IR)
        path.parent.mkdir()
        self.quantize(excluded, path)
        score = self.validation.score(path)
        self.validation.progress(f"trial {self.count}/{self.validation.max_trials}: {what}: {score:.4f} "
                                 f"(fp32 {self.reference:.4f}, budget {self.validation.budget.describe()})")
        return score, path


def keep_in_float_search(quantize: Callable[[list[str], Path], None], candidates: list[str], reference: float,
                         validation: Validation, dest: Path,
                         ranking: Callable[[Path], list[str]] | None = None,
                         ranked_by: str = ONE_PASS_ACTIVATIONS) -> SearchReport:
    """Quantize with every candidate; if the budget is missed, rank the candidates, most harmful
    first, and keep the shortest head of that ranking in float that meets the budget: heads of 1, 2,
    4, ... layers until one does, then bisection between the last two. The ranking comes from
    `ranking(int8 path)` when the format can measure it in one pass (per-layer error between float
    and quantized activations), else from quantizing one candidate at a time, as far as the bounds
    (`max_trials`, `max_seconds`) allow. The best model found is written to `dest`, whatever ends
    the search."""
    report = SearchReport(reference=reference, budget=validation.budget.describe(),
                          allowed_drop=validation.budget.allowed_drop(reference))
    budget = validation.budget
    with tempfile.TemporaryDirectory(prefix="compress-aa-") as scratch:
        trials = _Trials(quantize, validation, Path(scratch), dest.name, reference)
        score, full = trials.run([], "everything in int8")
        best = (score, full, [])
        report.steps.append({"kept_in_float": [], "validation_metric": round(score, 6)})

        def better(candidate_score: float) -> bool:
            return budget.drop(reference, candidate_score) < budget.drop(reference, best[0])

        if budget.met(reference, score):
            report.stopped = "budget met"
        else:
            ordered = _rank(candidates, ranking, ranked_by, full, trials, report, reference, budget)
            met_at, missed_at = None, 0  # heads of the ranking: the shortest known to meet, the longest known not
            size = 1
            while trials.left() > 0:
                if met_at is None:
                    if missed_at >= len(ordered):
                        break
                    size = min(max(1, missed_at * 2), len(ordered))
                else:
                    if met_at - missed_at <= 1:
                        break
                    size = (met_at + missed_at) // 2
                head = ordered[:size]
                score, path = trials.run(head, f"{size} layer(s) kept in float")
                report.steps.append({"kept_in_float": list(head), "validation_metric": round(score, 6)})
                if budget.met(reference, score):
                    met_at = size
                    if not budget.met(reference, best[0]) or size < len(best[2]) or better(score):
                        best = (score, path, list(head))
                else:
                    missed_at = size
                    if not budget.met(reference, best[0]) and better(score):
                        best = (score, path, list(head))
            met = budget.met(reference, best[0])
            report.stopped = ("budget met" if met else "every candidate kept in float"
                              if missed_at >= len(ordered) else "max_seconds" if trials.count < validation.max_trials
                              else "max_trials")
        report.score, report.kept_in_float = best[0], best[2]
        report.met = budget.met(reference, best[0])
        report.trials = trials.count
        if best[1].is_dir():
            shutil.copytree(best[1], dest)
        else:
            shutil.copy2(best[1], dest)
    return report


def _rank(candidates: list[str], ranking: Callable[[Path], list[str]] | None, ranked_by: str, full: Path,
          trials: _Trials, report: SearchReport, reference: float, budget: Budget) -> list[str]:
    if ranking is not None:
        report.ranked_by = ranked_by
        ranked = [c for c in ranking(full) if c in candidates]
        return ranked + [c for c in candidates if c not in ranked]
    # One candidate at a time, keeping half the trials left for the search over heads.
    report.ranked_by = "quantizing one candidate at a time"
    sensitivity: dict[str, float] = {}
    for candidate in candidates:
        if trials.left() <= max(1, trials.validation.max_trials // 2):
            break
        score, _ = trials.run([c for c in candidates if c != candidate], f"{candidate} alone in int8")
        sensitivity[candidate] = budget.drop(reference, score)
    report.steps[0]["sensitivity"] = {c: round(v, 6) for c, v in sorted(sensitivity.items(), key=lambda i: -i[1])}
    measured = sorted(sensitivity, key=lambda c: sensitivity[c], reverse=True)
    return measured + [c for c in candidates if c not in sensitivity]


def missed_message(artifact: str, info: dict[str, Any]) -> str:
    search = info["accuracy_aware"]
    kept = search["kept_in_float"]
    return (f"{artifact}: int8 cannot meet max_accuracy_drop {search['budget']}: the best found scores "
            f"{search['validation_metric_int8']:.4f} against {search['validation_metric_fp32']:.4f} in fp32 on "
            f"the validation split, keeping {len(kept)} layer(s) in float ({', '.join(kept[:5]) or 'none'}"
            f"{' ...' if len(kept) > 5 else ''}) after {search['trials']} trial(s) ({search['stopped']})")
