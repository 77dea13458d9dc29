"""Splits of samples, their batching, and the check that they fit the model's input spec."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import InputError

if TYPE_CHECKING:
    from compress.plan import Plan
    from compress.recipe import InputSpec


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return len(self.x)

    def head(self, count: int) -> Split:
        return Split(self.x[:count], None if self.y is None else self.y[:count])


@dataclass(frozen=True)
class Splits:
    """Train to fine-tune, calibration to quantize (and tune), test to report on."""

    train: Split
    calibration: Split
    test: Split
    source: str

    def fingerprint(self) -> str:
        """A hash of every sample and label, so cached artifacts notice changed data."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:  # computed once: several cache keys and results.json use it
        import hashlib

        digest = hashlib.sha256()
        for split in (self.train, self.calibration, self.test):
            for array in (split.x, split.y):
                if array is not None:
                    digest.update(str((array.shape, array.dtype.str)).encode())
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


def seeded_splits(x: np.ndarray, y: np.ndarray | None, *, calibration_fraction: float,
                  test_fraction: float, seed: int, source: str, file: str | None = None) -> Splits:
    """Fixed, seeded splits (stratified by label when there are labels)."""
    from sklearn.model_selection import train_test_split

    if len(x) < 3:
        raise InputError(f"{source} has {len(x)} samples: a train, a calibration and a test split need at least 3",
                         file=file, field="data")
    if y is not None and len(y) != len(x):
        raise InputError(f"{source} has {len(x)} samples but {len(y)} labels", file=file, field="data")
    indices = np.arange(len(x))
    calibration_share = calibration_fraction / (1 - test_fraction)

    def split(labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rest, test = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=labels)
        train, calibration = train_test_split(rest, test_size=calibration_share, random_state=seed,
                                              stratify=None if labels is None else labels[rest])
        return train, calibration, test

    try:  # stratified when the labels allow it (every class in every split), plain otherwise
        train, calibration, test = split(y if y is not None and len(np.unique(y)) < len(y) // 4 else None)
    except ValueError:
        train, calibration, test = split(None)

    def take(idx: np.ndarray) -> Split:
        idx = np.sort(idx)
        return Split(x[idx], None if y is None else y[idx])

    return Splits(train=take(train), calibration=take(calibration), test=take(test), source=source)


def batches(split: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0
            ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    order = np.random.default_rng(seed).permutation(len(split)) if shuffle else np.arange(len(split))
    for start in range(0, len(split), batch_size):
        idx = order[start:start + batch_size]
        yield split.x[idx], (None if split.y is None else split.y[idx])


def check_against_input(splits: Splits, spec: InputSpec, *, file: str) -> Splits:
    """Samples must have the model's per-sample shape and a compatible dtype; floats are cast."""
    want_float = spec.dtype.startswith("float")
    fixed: dict[str, Split] = {}
    for name in ("train", "calibration", "test"):
        split: Split = getattr(splits, name)
        if len(split) == 0:
            raise InputError(f"the {name} split is empty", file=file, field="data")
        if tuple(split.x.shape[1:]) != spec.sample_shape:
            raise InputError(
                f"{name} samples have shape {tuple(split.x.shape[1:])} but model.input.shape "
                f"{spec.shape} expects {spec.sample_shape} per sample", file=file, field="data")
        is_float = np.issubdtype(split.x.dtype, np.floating)
        if want_float != is_float:
            raise InputError(f"{name} samples are {split.x.dtype} but model.input.dtype is {spec.dtype}",
                             file=file, field="data")
        if split.y is not None and len(split.y) != len(split.x):
            raise InputError(f"{name} has {len(split.x)} samples but {len(split.y)} labels",
                             file=file, field="data")
        if is_float:
            finite = np.isfinite(split.x.reshape(len(split.x), -1)).all(axis=1)
            if not finite.all():
                raise InputError(f"{name} sample {int(np.argmin(finite))} holds NaN or infinite values "
                                 f"({int((~finite).sum())} of {len(split)} samples do)", file=file, field="data")
        fixed[name] = Split(split.x.astype(spec.dtype, copy=False), split.y)
    return Splits(**fixed, source=splits.source)


def load_data(plan: Plan) -> Splits:
    """Load the recipe's data source (a `compress.datasets` plugin) and check it fits the model."""
    splits = plan.dataset(plan.recipe.data, plan.data_context())
    return check_against_input(splits, plan.recipe.model.input, file=plan.file)
