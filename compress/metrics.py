"""Task metrics, computed from the outputs the device agent kept during the timed runs.

A metric is `f(outputs, labels, reference=None) -> float`; `reference` is the original model's
outputs on the same samples, for metrics that compare against it (embedding cosine). Metrics where
lower is better are listed in LOWER_IS_BETTER, so budgets and gates measure a drop the right way.
"""

from __future__ import annotations

import numpy as np

from compress.tasks import mean_cosine

LOWER_IS_BETTER = frozenset({"perplexity"})


def top1(outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Share of correct top-1 predictions (per token for a language model)."""
    return float((outputs.argmax(axis=-1) == labels).mean())


def perplexity(outputs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> float:
    """exp(mean next-token cross-entropy) from logits (..., vocab) and labels (...)."""
    logits = outputs.reshape(-1, outputs.shape[-1]).astype(np.float64)
    targets = labels.reshape(-1)
    peak = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[:, 0]
    nll = log_norm - logits[np.arange(len(targets)), targets]
    return float(np.exp(nll.mean()))


def cosine(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None = None) -> float:
    """Mean cosine similarity of each output vector to the original model's (embedding models)."""
    if reference is None:
        raise ValueError("the cosine metric needs the original model's outputs")
    return mean_cosine(outputs, reference)


def needs_labels(metric_name: str) -> bool:
    return metric_name != "cosine"


def drop(metric_name: str, reference: float, value: float) -> float:
    """How much worse `value` is than `reference` (positive = worse), whichever way the metric runs."""
    return value - reference if metric_name in LOWER_IS_BETTER else reference - value

