"""Built-in data sources: scikit-learn's shipped digits, .npz files, and a Python callable."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from compress.data.base import Split, Splits, seeded_splits
from compress.errors import InputError

if TYPE_CHECKING:
    from compress.contracts import DataContext
    from compress.recipe import DataConfig

_SPLIT_NAMES = ("train", "calibration", "test")


def digits(config: DataConfig, ctx: DataContext) -> Splits:
    """scikit-learn's 1,797 8x8 digit images (shipped with the package: no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return seeded_splits(x, y, calibration_fraction=config.calibration_fraction,
                         test_fraction=config.test_fraction, seed=config.seed, source="digits")


def digits_sequence(config: DataConfig, ctx: DataContext) -> Splits:
    """The same digits, each image as a sequence of its 8 rows (8 steps of 8 features)."""
    splits = digits(config, ctx)
    return Splits(**{name: Split(getattr(splits, name).x[:, 0], getattr(splits, name).y)
                     for name in ("train", "calibration", "test")}, source="digits_sequence")


def _from_arrays(arrays: dict[str, np.ndarray], config: DataConfig, origin: str, file: str,
                 inputs: list[str] | None = None) -> Splits:
    """Either `x` (+ `y`) to split with the seed, or ready splits `train_x`, `train_y`, ...; for a
    model with several inputs, one array per input named after it (`input_ids`, `attention_mask`,
    + `y`), or ready splits `train_input_ids`, ..."""
    names = [n for n in inputs or [] if n not in ("x", "y")]
    if "x" in arrays:
        return seeded_splits(arrays["x"], arrays.get("y"), calibration_fraction=config.calibration_fraction,
                             test_fraction=config.test_fraction, seed=config.seed, source=origin, file=file)
    if names and all(n in arrays for n in names):
        return seeded_splits({n: arrays[n] for n in names}, arrays.get("y"),
                             calibration_fraction=config.calibration_fraction, test_fraction=config.test_fraction,
                             seed=config.seed, source=origin, file=file)
    if all(f"{name}_x" in arrays for name in _SPLIT_NAMES):
        splits = {name: Split(arrays[f"{name}_x"], arrays.get(f"{name}_y")) for name in _SPLIT_NAMES}
        return Splits(**splits, source=origin)
    if names and all(f"{split}_{n}" in arrays for split in _SPLIT_NAMES for n in names):
        splits = {split: Split({n: arrays[f"{split}_{n}"] for n in names}, arrays.get(f"{split}_y"))
                  for split in _SPLIT_NAMES}
        return Splits(**splits, source=origin)
    per_input = f", or one array per input ({', '.join(repr(n) for n in names)}) and 'y'" if len(names) > 1 else ""
    raise InputError(f"{origin} has arrays {sorted(arrays)}; expected 'x' (and 'y'), or "
                     f"'train_x', 'calibration_x', 'test_x' (and their '_y'){per_input}", file=file, field="data")


# What an .npz may hold once decompressed: it is read into memory whole.
NPZ_BYTES = 4 << 30


def npz(config: DataConfig, ctx: DataContext) -> Splits:
    import zipfile
    import zlib

    assert config.path is not None  # the recipe schema requires it for this source
    path = ctx.resolve_path(config.path)
    try:
        archive = np.load(path, allow_pickle=False)  # no pickle: arrays only
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays (save with numpy.savez)")
        with archive:
            unpacked = sum(info.file_size for info in archive.zip.infolist())
            if unpacked > NPZ_BYTES:
                raise ValueError(f"its arrays unpack to {unpacked:,} bytes, more than the {NPZ_BYTES:,} read into "
                                 "memory")
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {path.name} as .npz: {reason}", file=ctx.file, field="data.path") from None
    return _from_arrays(arrays, config, path.name, ctx.file, [name for name, _, _ in ctx.inputs])


def from_callable(config: DataConfig, ctx: DataContext) -> Splits:
    """`module:attr` returning a dict of arrays, in the same layout as an .npz file."""
    from compress.modelio import resolve_factory

    assert config.callable is not None
    function = resolve_factory(config.callable, ctx.folder, file=ctx.file, field="data.callable", builds="data")
    try:
        arrays = function()
    except Exception as exc:
        raise InputError(f"{config.callable}() failed: {type(exc).__name__}: {str(exc).strip()[:200]}", file=ctx.file,
                         field="data.callable") from None
    if not isinstance(arrays, dict):
        raise InputError(f"{config.callable} returned {type(arrays).__name__}, expected a dict of arrays",
                         file=ctx.file, field="data.callable")
    return _from_arrays({k: np.asarray(v) for k, v in arrays.items()}, config, config.callable,
                        ctx.file, [name for name, _, _ in ctx.inputs])
