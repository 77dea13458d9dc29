"""Task metrics, computed from the outputs the device agent kept during the timed runs."""

from __future__ import annotations

import numpy as np


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(axis=-1) == labels).mean())


def agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of samples whose top-1 class matches the reference model's."""
    return float((outputs.argmax(axis=-1) == reference.argmax(axis=-1)).mean())
