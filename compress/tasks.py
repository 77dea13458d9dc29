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
LossFn = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor"], "torch.Tensor"]


def training_loss(kind: TaskKind) -> LossFn:
    """The supervised loss for training a model of this kind from scratch."""
    import torch.nn.functional as F

    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None, _inputs: torch.Tensor) -> torch.Tensor:
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

    def loss(outputs: torch.Tensor, labels: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(inputs)
        if kind == "embedding":
            return (1 - F.cosine_similarity(outputs, target, dim=-1)).mean() + F.mse_loss(outputs, target)
        flat, flat_target = outputs.reshape(-1, outputs.shape[-1]), target.reshape(-1, target.shape[-1])
        soft = F.kl_div(F.log_softmax(flat / temperature, dim=-1), F.softmax(flat_target / temperature, dim=-1),
                        reduction="batchmean") * temperature ** 2
        if labels is None or alpha == 1:
            return soft
        return alpha * soft + (1 - alpha) * F.cross_entropy(flat, labels.reshape(-1))

    return loss


def mean_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-sample cosine similarity of flattened outputs (1.0 where both are zero)."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)))


def agreement(kind: TaskKind, outputs: np.ndarray, reference: np.ndarray) -> float:
    """Agreement with the original model: the share of matching top-1 predictions (per sample, or
    per token for a language model); for an embedding model, the mean cosine of the vectors."""
    if kind == "embedding":
        return mean_cosine(outputs, reference)
    return float((outputs.argmax(axis=-1) == reference.argmax(axis=-1)).mean())
