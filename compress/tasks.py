"""What a task kind means for training, distillation and agreement with the original model.

- classification: logits (batch, classes) against integer labels.
- language_model: next-token logits (batch, steps, vocab) against the next tokens (batch, steps).
- embedding: vectors (batch, dims) with no labels; the reference is the original model's vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

TaskKind = str
LossFn = Callable[["torch.Tensor", "torch.Tensor | None", "tuple[torch.Tensor, ...]"], "torch.Tensor"]


def training_loss(kind: TaskKind) -> LossFn:
    """The supervised loss for training a model of this kind from scratch."""
    import torch.nn.functional as F

    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None,
                      _inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"training a {kind} model needs labels")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    return cross_entropy


def distillation_loss(kind: TaskKind, teacher: torch.nn.Module, temperature: float, alpha: float) -> LossFn:
    """Classifiers and language models: alpha * T^2 * KL(student/T || teacher/T) per sample or token,
    plus (1 - alpha) * cross-entropy on the labels (Hinton et al., 2015). Embedding models: one minus
    the cosine to the teacher's vector, plus a small mean-squared term that keeps the scale."""
    import torch
    import torch.nn.functional as F

    def loss(outputs: torch.Tensor, labels: torch.Tensor | None, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(*inputs)
        if kind == "embedding":
            return (1 - F.cosine_similarity(outputs, target, dim=-1)).mean() + F.mse_loss(outputs, target)
        flat, flat_target = outputs.reshape(-1, outputs.shape[-1]), target.reshape(-1, target.shape[-1])
        soft = F.kl_div(F.log_softmax(flat / temperature, dim=-1), F.softmax(flat_target / temperature, dim=-1),
                        reduction="batchmean") * temperature ** 2
        if labels is None or alpha == 1:
            return soft
        return alpha * soft + (1 - alpha) * F.cross_entropy(flat, labels.reshape(-1))

    return loss


def _rows(array: np.ndarray) -> np.ndarray:
    return array.reshape(len(array), -1).astype(np.float64)


def cosines(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of flattened outputs. A sample that is zero or not finite on one
    side only scores 0, never 1; two identical zero vectors score 1 (the outputs agree)."""
    a, b = _rows(outputs), _rows(reference)
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    a, b = np.where(finite[:, None], a, 0.0), np.where(finite[:, None], b, 0.0)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (norm_a == 0) & (norm_b == 0)
    value = (a * b).sum(axis=1) / np.maximum(norm_a * norm_b, 1e-300)
    return np.where(~finite, 0.0, np.where(both_zero, 1.0, np.where((norm_a == 0) | (norm_b == 0), 0.0, value)))


def mean_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-sample cosine (see `cosines`); NaN for no samples."""
    return float(cosines(outputs, reference).mean()) if len(outputs) else float("nan")


def non_finite_samples(outputs: np.ndarray) -> int:
    """How many samples have a NaN or infinite value somewhere in their outputs."""
    return int((~np.isfinite(_rows(outputs)).all(axis=1)).sum()) if len(outputs) else 0


def is_dead(outputs: np.ndarray, reference: np.ndarray) -> bool:
    """Outputs that are the same for every sample while the reference's vary: a model that ignores its
    input (all zeros, a constant, a collapsed quantization) is not close to one that does not."""
    if len(outputs) < 2:
        return False
    a, b = _rows(outputs), _rows(reference)
    return bool(np.ptp(a, axis=0).max() == 0 and np.ptp(b, axis=0).max() > 0)


def agreement(kind: TaskKind, outputs: np.ndarray, reference: np.ndarray) -> float:
    """Agreement with the original model: the share of matching top-1 predictions (per sample, or
    per token for a language model), a non-finite prediction never matching; for an embedding model,
    the mean cosine of the vectors."""
    if kind == "embedding":
        return mean_cosine(outputs, reference)
    finite = np.isfinite(outputs).all(axis=-1) & np.isfinite(reference).all(axis=-1)
    return float(((outputs.argmax(axis=-1) == reference.argmax(axis=-1)) & finite).mean())
