"""The accuracy budget: `max_accuracy_drop` in a recipe's quantize and gates sections and in a gates
file, read one way everywhere. 0.01 is one point of the metric; "1%" is 1% of the reference's
score. A drop is measured the metric's way: for a lower-is-better metric (perplexity) a rise.

Comparisons are exact up to float rounding: a value at the budget passes, anything over fails, and
NaN never passes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def check_drop(value: Any) -> float | str:
    """A budget as written: a finite number >= 0, or a percentage from 0% to 100%."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isnan(value) or math.isinf(value) or value < 0:
            raise ValueError(f"must be a finite number >= 0 (got {value!r})")
        return float(value)
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match and float(match.group(1)) <= 100:
            return f"{match.group(1)}%"
        if match:
            raise ValueError(f"a relative drop is at most 100% (got {value!r})")
    raise ValueError("must be an absolute drop (0.01 = one point of the metric) or a percentage of the "
                     f"reference's score like '1%' (got {value!r})")


# The type of a `max_accuracy_drop` field in a pydantic model.
AccuracyDrop = Annotated[float | str, BeforeValidator(check_drop)]


def same_float(value: float, limit: float) -> bool:
    """Equal up to float rounding only (0.90 - 0.89 is 0.010000000000000009, and is 0.01)."""
    return math.isclose(value, limit, rel_tol=1e-13, abs_tol=1e-15)


def at_most(value: float, limit: float) -> bool:
    """value <= limit, a value at the limit passing; NaN on either side fails."""
    return not (math.isnan(value) or math.isnan(limit)) and (value <= limit or same_float(value, limit))


def at_least(value: float, limit: float) -> bool:
    """value >= limit, a value at the limit passing; NaN on either side fails."""
    return not (math.isnan(value) or math.isnan(limit)) and (value >= limit or same_float(value, limit))


def drop(reference: float, value: float, lower_is_better: bool) -> float:
    """How much worse `value` is than `reference` (positive = worse), whichever way the metric runs."""
    return value - reference if lower_is_better else reference - value


@dataclass(frozen=True)
class Budget:
    value: float
    relative: bool
    lower_is_better: bool = False

    @classmethod
    def parse(cls, raw: float | str, lower_is_better: bool = False) -> Budget:
        checked = check_drop(raw)
        if isinstance(checked, str):
            return cls(float(checked[:-1]) / 100.0, relative=True, lower_is_better=lower_is_better)
        return cls(checked, relative=False, lower_is_better=lower_is_better)

    def drop(self, reference: float, score: float) -> float:
        return drop(reference, score, self.lower_is_better)

    def allowed_drop(self, reference: float) -> float:
        return self.value * abs(reference) if self.relative else self.value

    def met(self, reference: float, score: float) -> bool:
        return at_most(self.drop(reference, score), self.allowed_drop(reference))

    def describe(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"

    def out_of_range(self, metric: str, bounds: tuple[float | None, float | None]) -> str | None:
        """Why this budget cannot bind a metric with these bounds (it would pass anything), or None."""
        low, high = bounds
        if not self.relative and low is not None and high is not None and self.value >= high - low:
            return (f"an absolute drop of {self.value:g} spans all of {metric}'s range ({low:g} to {high:g}): "
                    "it would pass anything")
        if self.relative and self.value >= 1 and not self.lower_is_better and low is not None and low >= 0:
            return f"a drop of 100% of the reference's {metric} would pass anything"
        return None
