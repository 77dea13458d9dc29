"""Task metrics, computed from the outputs the device agent kept during the timed runs.

A metric is a `compress.metrics` plugin meeting compress.contracts.Metric: it is called as
`metric(outputs, labels, reference)` and says whether lower is better, whether it needs labels and
its range. `reference` is the original model's outputs on the same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compress.tasks import mean_cosine


@dataclass(frozen=True)
class Metric:
    function: Callable[..., float]
    lower_is_better: bool = False
    needs_labels: bool = True
    bounds: tuple[float | None, float | None] = (None, None)

    def __call__(self, outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None = None) -> float:
        return self.function(outputs, labels, reference)


def _top1(outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Share of correct top-1 predictions (per token for a language model); a prediction from
    non-finite logits is never correct."""
    finite = np.isfinite(outputs).all(axis=-1)
    return float(((outputs.argmax(axis=-1) == labels) & finite).mean())


def _perplexity(outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> float:
    """exp(mean next-token cross-entropy) from logits (..., vocab) and labels (...)."""
    logits = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
    targets = labels.reshape(-1)
    peak = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[:, 0]
    nll = log_norm - logits[np.arange(len(targets)), targets]
    return float(np.exp(nll.mean()))


def _cosine(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None = None) -> float:
    """Mean cosine similarity of each output vector to the original model's (embedding models)."""
    if reference is None:
        raise ValueError("the cosine metric needs the original model's outputs")
    return mean_cosine(outputs, reference)


top1 = Metric(_top1, bounds=(0.0, 1.0))
perplexity = Metric(_perplexity, lower_is_better=True, bounds=(1.0, None))
cosine = Metric(_cosine, needs_labels=False, bounds=(-1.0, 1.0))
