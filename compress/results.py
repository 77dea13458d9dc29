"""results.json: the typed, versioned record of a run. Gates and reports read this.

Bump RESULTS_SCHEMA_VERSION when a field changes meaning or is removed; adding a field is
backward compatible. docs/results.md describes every field; `compress schema --results` prints
the JSON Schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Latency is the device agent's own record (milliseconds per call of batch_size samples; samples per
# second; the p50 of each round of runs), kept as the protocol defines it.
from compress.runtimes.protocol import LatencyStats

RESULTS_SCHEMA_VERSION = 1
# The precisions of a quantized artifact: int8, or mixed when less of it is int8 than the recipe's
# quantize.min_int8_share (its ops left in float are named in its info).
QUANTIZED = ("int8", "mixed")
# Everything made from an fp32 artifact at a lower precision: compared with it for size and speed.
BELOW_FP32 = (*QUANTIZED, "fp16", "int4_weights")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArtifactRecord(_Record):
    name: str
    id: str
    format: str
    precision: str
    path: str = Field(description="relative to the run folder")
    sha256: str
    size_bytes: int
    params: int | None = None
    macs: int | None = Field(None, description="multiply-accumulates per sample, from the torch parent")
    lineage: list[str]
    parent: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict, description="what it carries from the model it was "
                                       "made from (e.g. input_transpose for a channels-last model)")


class Parity(_Record):
    """Outputs of an artifact against the torch model it was made from, on the same test inputs."""

    reference: str = Field(description="the torch artifact compared against")
    max_abs_error: float
    cosine: float = Field(description="mean over samples of the cosine similarity of the output vectors")
    agreement: float = Field(description="share of samples (tokens, for a language model) with the same top-1 "
                             "output; for an embedding model, the mean cosine")
    thresholds: dict[str, float | None]
    passed: bool
    failures: list[str] = Field(default_factory=list)


class Measurement(_Record):
    """One artifact on one runtime, target and thread count."""

    artifact: str
    runtime: str
    target: str
    threads: int
    status: Literal["ok", "failed", "timeout", "bad_input", "incomplete", "skipped"] = Field(
        description="incomplete: the connection to a remote device dropped (never a pass)")
    error: str | None = None
    metric: dict[str, float] = Field(default_factory=dict, description="task metric(s) on the test split")
    agreement: float | None = Field(None, description="agreement with the original model on the test split: the "
                                    "share of matching top-1 outputs (per token for a language model), or the "
                                    "mean cosine for an embedding model")
    latency: LatencyStats | None = None
    parity: Parity | None = None
    runtime_version: str | None = None
    device: dict[str, Any] = Field(default_factory=dict)


class Refusal(_Record):
    """A format (or its quantizer) that could not hold the model, or a recurrent layer its int8
    quantizer left in float; the run went on."""

    artifact: str = Field(description="the artifact it was made from (the int8 artifact, for a layer left in float)")
    format: str
    stage: str = Field(description="export.<format>, quantize.<format> or fp16.<format>")
    op: str | None = Field(None, description="the operator the converter named, when it did")
    reason: str


class StageRecord(_Record):
    name: str
    artifact: str
    cached: bool
    seconds: float
    info: dict[str, Any] = Field(default_factory=dict)


class Results(_Record):
    schema_version: Literal[1] = RESULTS_SCHEMA_VERSION
    compress_version: str
    run_id: str
    recipe: str
    recipe_name: str
    started: str
    finished: str
    status: Literal["complete", "incomplete", "budget_missed"] = Field(
        description="incomplete when any measurement failed or timed out: never a pass; budget_missed when an "
                    "accuracy-aware int8 artifact missed quantize.max_accuracy_drop (the best found is kept, and "
                    "measured)")
    task: dict[str, Any]
    data: dict[str, Any]
    stages: list[StageRecord]
    artifacts: list[ArtifactRecord]
    measurements: list[Measurement]
    refusals: list[Refusal] = Field(default_factory=list)
    accuracy_budget: list[dict[str, Any]] = Field(
        default_factory=list, description="per accuracy-aware int8 artifact: its format, the best found, its score on "
                                          "the validation split against the fp32 parent's, and whether it met the "
                                          "budget")
    summary: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str]

    def artifact(self, name: str) -> ArtifactRecord:
        return next(a for a in self.artifacts if a.name == name)
