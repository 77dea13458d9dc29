"""Splits of samples, their batching, and the check that they fit the model's input spec."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import InputError

if TYPE_CHECKING:
    import torch

    from compress.plan import Plan
    from compress.recipe import InputSpec


class Split:
    """Samples of every model input, by name and in the model's input order (samples on the first
    axis; arrays may be memory-mapped), and their labels. A source with one input may give a plain
    array: it is named after the model's input when checked against it."""

    __slots__ = ("inputs", "y")

    def __init__(self, x: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray | None = None) -> None:
        inputs = dict(x) if isinstance(x, Mapping) else {UNNAMED: x}
        if not inputs:
            raise ValueError("a split needs at least one input")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "y", y)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Split is immutable")

    @property
    def x(self) -> np.ndarray:
        """The samples of a model with one input."""
        if len(self.inputs) != 1:
            raise ValueError(f"this split feeds {len(self.inputs)} inputs ({', '.join(self.inputs)}), not one")
        return next(iter(self.inputs.values()))

    @property
    def names(self) -> list[str]:
        return list(self.inputs)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, index: np.ndarray | slice) -> Split:
        return Split({k: v[index] for k, v in self.inputs.items()}, None if self.y is None else self.y[index])

    def head(self, count: int) -> Split:
        return self.take(slice(0, count))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """One tensor per input (copies: the arrays may be memory-mapped or read-only)."""
        import torch

        return tuple(torch.from_numpy(np.array(array)) for array in self.inputs.values())

    def renamed(self, names: list[str]) -> Split:
        return Split(dict(zip(names, self.inputs.values(), strict=True)), self.y)


UNNAMED = "input"


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
            for name, array in [*split.inputs.items(), ("labels", split.y)]:
                if array is not None:
                    digest.update(str((name, array.shape, array.dtype.str)).encode())
                    step = chunk_rows(array)  # memory-mapped data is read a few MB at a time
                    for start in range(0, len(array), step):
                        digest.update(memoryview(np.ascontiguousarray(array[start:start + step])).cast("B"))
        return digest.hexdigest()[:16]


CHUNK_BYTES = 16 << 20


def chunk_rows(array: np.ndarray) -> int:
    """Rows of `array` in about CHUNK_BYTES: what a pass over memory-mapped data holds at once."""
    row = max(1, array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64)))
    return max(1, CHUNK_BYTES // row)


def seeded_splits(x: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray | None, *, calibration_fraction: float,
                  test_fraction: float, seed: int, source: str, file: str | None = None) -> Splits:
    """Fixed, seeded splits (stratified by label when there are labels)."""
    from sklearn.model_selection import train_test_split

    everything = Split(x, y)
    count = len(everything)
    if count < 3:
        raise InputError(f"{source} has {count} samples: a train, a calibration and a test split need at least 3",
                         file=file, field="data")
    lengths = {name: len(array) for name, array in everything.inputs.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{source}'s inputs hold different numbers of samples: {lengths}", file=file, field="data")
    if y is not None and len(y) != count:
        raise InputError(f"{source} has {count} samples but {len(y)} labels", file=file, field="data")
    indices = np.arange(count)
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
        return everything.take(np.sort(idx))

    return Splits(train=take(train), calibration=take(calibration), test=take(test), source=source)


def batches(split: Split, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[Split]:
    """Batches of a split (each a copy of its rows, in the seeded order when shuffled)."""
    order = np.random.default_rng(seed).permutation(len(split)) if shuffle else np.arange(len(split))
    for start in range(0, len(split), batch_size):
        yield split.take(order[start:start + batch_size])


def _fit_inputs(split: Split, specs: list[InputSpec], name: str, file: str) -> Split:
    """The split's inputs named and ordered as the model takes them."""
    want = [spec.name for spec in specs]
    if len(specs) == 1 and len(split.inputs) == 1:
        return split.renamed(want)
    missing = [n for n in want if n not in split.inputs]
    if missing:
        raise InputError(f"the data has no input {missing[0]!r} (it has {', '.join(split.inputs)}); model.inputs "
                         f"names {', '.join(want)}", file=file, field="data")
    extra = [n for n in split.inputs if n not in want]
    if extra:
        raise InputError(f"the data has an input {extra[0]!r} that model.inputs does not name "
                         f"({', '.join(want)})", file=file, field="model.inputs")
    return Split({n: split.inputs[n] for n in want}, split.y)


def check_against_input(splits: Splits, specs: InputSpec | list[InputSpec], *, file: str) -> Splits:
    """Samples must have each input's per-sample shape (dynamic axes excepted) and a compatible
    dtype; floats are cast, in chunks; non-finite samples are refused."""
    specs = specs if isinstance(specs, list) else [specs]
    fixed: dict[str, Split] = {}
    for name in ("train", "calibration", "test"):
        split = _fit_inputs(getattr(splits, name), specs, name, file)
        if len(split) == 0:
            raise InputError(f"the {name} split is empty", file=file, field="data")
        cast: dict[str, np.ndarray] = {}
        for index, spec in enumerate(specs):
            array = split.inputs[spec.name]
            where = "model.input" if len(specs) == 1 else f"model.inputs[{index}]"
            what = f"{name} samples" if len(specs) == 1 else f"{name} samples of input {spec.name!r}"
            fixed_axes = [axis for axis in range(1, len(spec.shape)) if axis not in spec.dynamic_axes]
            if array.ndim != len(spec.shape) or any(array.shape[a] != spec.shape[a] for a in fixed_axes):
                raise InputError(f"{what} have shape {tuple(array.shape[1:])} but {where}.shape {spec.shape} "
                                 f"expects {spec.sample_shape} per sample", file=file, field="data")
            if len(array) != len(split):
                raise InputError(f"{what}: {len(array)}, but the split has {len(split)} samples", file=file,
                                 field="data")
            want_float = spec.dtype.startswith("float")
            is_float = np.issubdtype(array.dtype, np.floating)
            if want_float != is_float:
                raise InputError(f"{what} are {array.dtype} but {where}.dtype is {spec.dtype}", file=file,
                                 field="data")
            if is_float:
                _check_finite(array, what, file)
            cast[spec.name] = array if array.dtype == np.dtype(spec.dtype) else array.astype(spec.dtype)
        if split.y is not None and len(split.y) != len(split):
            raise InputError(f"{name} has {len(split)} samples but {len(split.y)} labels", file=file, field="data")
        fixed[name] = Split(cast, split.y)
    return Splits(**fixed, source=splits.source)


def _check_finite(array: np.ndarray, what: str, file: str) -> None:
    bad, first = 0, -1
    step = chunk_rows(array)  # memory-mapped data is read a few MB at a time
    for start in range(0, len(array), step):
        chunk = array[start:start + step]
        finite = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if not finite.all():
            first = start + int(np.argmin(finite)) if first < 0 else first
            bad += int((~finite).sum())
    if bad:
        raise InputError(f"{what.replace(' samples', ' sample', 1)} {first} holds NaN or infinite values "
                         f"({bad} of {len(array)} samples do)", file=file, field="data")


def load_data(plan: Plan) -> Splits:
    """Load the recipe's data source (a `compress.datasets` plugin) and check it fits the model."""
    splits = plan.dataset(plan.recipe.data, plan.data_context())
    return check_against_input(splits, plan.recipe.model.input_specs, file=plan.file)
