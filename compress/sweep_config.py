"""The recipe's `sweep:` section (pydantic). Only `compress sweep` reads it; `compress run` runs the
recipe as written."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Range(_Strict):
    """A continuous range, for the random and TPE strategies."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class LatencyObjective(_Strict):
    """Which measurement is a trial's latency: on this target, runtime and thread count (default: the
    first of each that measured the trial's artifact)."""

    target: str | None = None
    runtime: str | None = None
    threads: int | None = Field(None, ge=1)
    percentile: Literal["p50", "p90", "p99"] = "p50"


class Objectives(_Strict):
    """A trial is one point: its `artifact` (default: the first quantized artifact, else the last
    export of the last torch stage, else the last torch stage) scored by the task metric, latency
    and size. The Pareto set is over the three."""

    artifact: str | None = Field(None, description="an artifact name of the run, e.g. distill.int8.onnx; "
                                 "{format} stands for the trial's first export format")
    latency: LatencyObjective = Field(default_factory=LatencyObjective)


class Constraints(_Strict):
    max_accuracy_drop: float | None = Field(None, ge=0, description="against the original model on torch, in the "
                                            "metric's units (0.01 = one point of top-1)")
    max_latency_ms: float | None = Field(None, gt=0)
    max_size_mb: float | None = Field(None, gt=0)


class SweepConfig(_Strict):
    parameters: dict[str, list[Any] | Range] = Field(min_length=1, description="recipe path (as in --set) -> "
                                                     "values, or a range {low, high, log} for random and tpe")
    strategy: Literal["grid", "random", "tpe"] = "grid"
    trials: int | None = Field(None, ge=1, description="how many trials random and tpe run; grid runs every "
                               "combination")
    seed: int = 0
    parallel: int | None = Field(None, ge=1, description="trials at once (default: the CPUs Ray has / cpus_per_trial)")
    cpus_per_trial: float = Field(1.0, gt=0)
    retries: int = Field(2, ge=0, description="times a trial whose worker died is run again")
    objectives: Objectives = Field(default_factory=Objectives)
    constraints: Constraints = Field(default_factory=Constraints)

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        for path, values in self.parameters.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"parameter {path!r} has no values")
            if isinstance(values, Range) and self.strategy == "grid":
                raise ValueError(f"parameter {path!r} is a range: grid needs a list of values (or use random or tpe)")
        if self.strategy != "grid" and self.trials is None:
            raise ValueError(f"strategy {self.strategy} needs trials (how many)")
        if self.strategy == "grid" and self.trials is not None:
            raise ValueError("grid runs every combination: leave trials out (or use random)")
        return self
