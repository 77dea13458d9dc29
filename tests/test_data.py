"""Data: fixed seeded splits, the .npz and callable sources, batching, and the check against the
model's input spec."""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from compress.data import Split, Splits, batches, check_against_input, load_data, seeded_splits
from compress.data.sources import digits
from compress.errors import InputError
from compress.plan import Plan
from compress.recipe import DataConfig, InputSpec, load_recipe
from tests.conftest import printed_results, small_recipe

DIGITS = 1797
MODULE = "mydata"


@pytest.fixture(autouse=True)
def forget_user_modules() -> Iterator[None]:
    sys.modules.pop(MODULE, None)
    yield
    sys.modules.pop(MODULE, None)


def _recipe(folder: Path, data: dict[str, Any], shape: list[int] | None = None) -> Plan:
    recipe = small_recipe(data=data)
    if shape is not None:
        recipe["model"]["input"]["shape"] = shape
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return load_recipe(path)


def _images(count: int, seed: int = 0, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((count, 1, 8, 8)).astype(dtype), (np.arange(count) % 10).astype(np.int64)


def _rows(*splits: Split) -> list[tuple[bytes, int]]:
    return sorted((x.tobytes(), int(y)) for split in splits for x, y in zip(split.x, split.y, strict=True))


def _equal(a: Splits, b: Splits) -> bool:
    return all(np.array_equal(getattr(a, n).x, getattr(b, n).x) and np.array_equal(getattr(a, n).y, getattr(b, n).y)
               for n in ("train", "calibration", "test"))


# --- digits and seeded splits -------------------------------------------------------------------

def test_digits_splits_are_fixed_by_the_seed() -> None:
    first = digits(DataConfig(seed=0), None)  # type: ignore[arg-type]
    again = digits(DataConfig(seed=0), None)  # type: ignore[arg-type]
    other = digits(DataConfig(seed=1), None)  # type: ignore[arg-type]
    assert _equal(first, again)
    assert first.fingerprint() == again.fingerprint()
    assert not np.array_equal(first.test.x, other.test.x)
    assert first.fingerprint() != other.fingerprint()
    assert first.source == "digits"
    assert first.train.x.dtype == np.float32 and first.train.x.shape[1:] == (1, 8, 8)
    assert first.train.x.min() >= 0.0 and first.train.x.max() <= 1.0


def test_digits_splits_partition_the_dataset() -> None:
    from sklearn.datasets import load_digits

    splits = digits(DataConfig(seed=0), None)  # type: ignore[arg-type]
    bunch = load_digits()
    everything = Split((bunch.images / 16.0).astype(np.float32)[:, None], bunch.target)
    assert _rows(splits.train, splits.calibration, splits.test) == _rows(everything)


@pytest.mark.parametrize(("calibration", "test"), [(0.1, 0.2), (0.25, 0.3), (0.05, 0.5)])
def test_split_sizes_follow_the_fractions(calibration: float, test: float) -> None:
    splits = digits(DataConfig(calibration_fraction=calibration, test_fraction=test), None)  # type: ignore[arg-type]
    assert len(splits.train) + len(splits.calibration) + len(splits.test) == DIGITS
    assert len(splits.test) == math.ceil(test * DIGITS)
    assert abs(len(splits.calibration) - calibration * DIGITS) <= 1
    for split in (splits.train, splits.calibration, splits.test):  # stratified: every class in every split
        assert set(np.unique(split.y)) == set(range(10))


def test_seeded_splits_are_disjoint_and_cover_every_index() -> None:
    x = np.arange(500)
    y = x % 5
    splits = seeded_splits(x, y, calibration_fraction=0.1, test_fraction=0.2, seed=7, source="t")
    parts = [set(s.x.tolist()) for s in (splits.train, splits.calibration, splits.test)]
    assert sum(len(p) for p in parts) == 500
    assert set.union(*parts) == set(range(500))
    for split in (splits.train, splits.calibration, splits.test):
        assert np.array_equal(split.y, split.x % 5)  # labels stay with their samples
        assert np.all(np.diff(split.x) > 0)  # kept in the original order
    unlabelled = seeded_splits(x, None, calibration_fraction=0.1, test_fraction=0.2, seed=7, source="t")
    assert unlabelled.test.y is None
    assert sum(len(s) for s in (unlabelled.train, unlabelled.calibration, unlabelled.test)) == 500


# --- .npz ---------------------------------------------------------------------------------------

def test_npz_with_x_and_y_is_split_with_the_seed(tmp_path: Path) -> None:
    x, y = _images(200, dtype="float64")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    loaded = _recipe(tmp_path, {"source": "npz", "path": "data.npz", "seed": 3})
    splits = load_data(loaded)
    assert splits.source == "data.npz"
    assert len(splits.train) + len(splits.calibration) + len(splits.test) == 200
    assert len(splits.test) == 40
    assert splits.train.x.dtype == np.float32  # cast to model.input.dtype
    assert _rows(splits.train, splits.calibration, splits.test) == _rows(Split(x.astype(np.float32), y))
    assert _equal(splits, load_data(loaded))
    assert not np.array_equal(splits.test.x, load_data(_recipe(tmp_path, {
        "source": "npz", "path": "data.npz", "seed": 4})).test.x)


def test_npz_with_ready_splits_is_used_as_is(tmp_path: Path) -> None:
    arrays = {}
    for offset, (name, count) in enumerate((("train", 50), ("calibration", 20), ("test", 30))):
        arrays[f"{name}_x"], arrays[f"{name}_y"] = _images(count, seed=offset)
    np.savez(tmp_path / "data.npz", **arrays)
    splits = load_data(_recipe(tmp_path, {"source": "npz", "path": str(tmp_path / "data.npz")}))
    for name in ("train", "calibration", "test"):
        assert np.array_equal(getattr(splits, name).x, arrays[f"{name}_x"])
        assert np.array_equal(getattr(splits, name).y, arrays[f"{name}_y"])


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.sentinel))}",))


def test_npz_with_an_object_array_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    x, y = _images(100)
    np.savez(tmp_path / "data.npz", x=x, y=y, meta=np.array([_Payload(sentinel)], dtype=object))
    with pytest.raises(InputError) as caught:
        load_data(_recipe(tmp_path, {"source": "npz", "path": "data.npz"}))
    assert caught.value.field == "data.path"
    assert "cannot read" in caught.value.message and "allow_pickle" in caught.value.message
    assert not sentinel.exists()


def test_npz_missing_the_expected_keys_says_what_it_has(tmp_path: Path) -> None:
    x, y = _images(100)
    np.savez(tmp_path / "data.npz", images=x, labels=y)
    with pytest.raises(InputError) as caught:
        load_data(_recipe(tmp_path, {"source": "npz", "path": "data.npz"}))
    assert caught.value.field == "data"
    message = caught.value.message
    assert "['images', 'labels']" in message and "'x'" in message and "'train_x'" in message

    np.savez(tmp_path / "partial.npz", train_x=x, test_x=x)  # no calibration_x
    with pytest.raises(InputError, match="calibration_x"):
        load_data(_recipe(tmp_path, {"source": "npz", "path": "partial.npz"}))


def test_a_missing_npz_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="data file not found") as caught:
        load_data(_recipe(tmp_path, {"source": "npz", "path": "nowhere.npz"}))
    assert caught.value.field == "data.path"


def test_an_npy_file_given_as_npz_is_an_input_error(tmp_path: Path) -> None:
    """np.load returns a bare array for .npy: still one clear InputError, not a crash."""
    x, _ = _images(100)
    np.save(tmp_path / "data.npy", x)
    with pytest.raises(InputError) as caught:
        load_data(_recipe(tmp_path, {"source": "npz", "path": "data.npy"}))
    assert caught.value.field == "data.path"


def test_labels_with_a_class_too_rare_to_stratify_are_split_plainly(tmp_path: Path) -> None:
    """A class with a single sample cannot be stratified (scikit-learn raises): the split falls back
    to a plain seeded one, every sample in exactly one split with its own label."""
    x, _ = _images(100)
    x[:, 0, 0, 0] = np.arange(100)  # each sample carries its own index
    y = np.array([0] * 50 + [1] * 49 + [2])
    np.savez(tmp_path / "data.npz", x=x, y=y)
    loaded = _recipe(tmp_path, {"source": "npz", "path": "data.npz"})
    splits = load_data(loaded)
    parts = (splits.train, splits.calibration, splits.test)
    assert [len(part) for part in parts] == [70, 10, 20]  # the default fractions 0.1 and 0.2
    ids = [part.x[:, 0, 0, 0].astype(int) for part in parts]
    assert sorted(np.concatenate(ids).tolist()) == list(range(100))  # a partition: none lost, none twice
    for part, index in zip(parts, ids, strict=True):
        assert np.array_equal(part.y, y[index])  # labels travel with their samples
    again = load_data(loaded)
    assert np.array_equal(again.test.x, splits.test.x)  # seeded: the same split every time


# --- callable -----------------------------------------------------------------------------------

def test_a_callable_source_beside_the_recipe(tmp_path: Path) -> None:
    (tmp_path / f"{MODULE}.py").write_text(
        "import numpy as np\n\n"
        "def make():\n"
        "    rng = np.random.default_rng(0)\n"
        "    return {'x': rng.random((120, 1, 8, 8)).astype('float32'), 'y': [i % 10 for i in range(120)]}\n\n"
        "def wrong():\n"
        "    return [1, 2, 3]\n")
    splits = load_data(_recipe(tmp_path, {"source": "callable", "callable": f"{MODULE}:make"}))
    assert splits.source == f"{MODULE}:make"
    assert len(splits.train) + len(splits.calibration) + len(splits.test) == 120
    assert splits.train.y.dtype.kind == "i"

    with pytest.raises(InputError, match="returned list, expected a dict of arrays") as caught:
        load_data(_recipe(tmp_path, {"source": "callable", "callable": f"{MODULE}:wrong"}))
    assert caught.value.field == "data.callable"
    with pytest.raises(InputError, match="no attribute") as caught:
        load_data(_recipe(tmp_path, {"source": "callable", "callable": f"{MODULE}:absent"}))
    assert caught.value.field == "data.callable"


# --- the check against model.input --------------------------------------------------------------

def test_a_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    x, y = _images(100)
    np.savez(tmp_path / "data.npz", x=x.reshape(100, 64), y=y)
    with pytest.raises(InputError) as caught:
        load_data(_recipe(tmp_path, {"source": "npz", "path": "data.npz"}))
    assert caught.value.field == "data"
    assert "(64,)" in caught.value.message and "(1, 8, 8)" in caught.value.message


def test_a_run_with_mismatched_data_exits_2(tmp_path: Path, cli) -> None:
    x, y = _images(100)
    np.savez(tmp_path / "data.npz", x=x.reshape(100, 64), y=y)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe(data={"source": "npz", "path": "data.npz"})))
    result = cli("run", recipe, "--out", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "(64,)" in result.stderr and "(1, 8, 8)" in result.stderr
    assert "Traceback" not in result.stderr


def _splits(x: np.ndarray, y: np.ndarray | None) -> Splits:
    return Splits(train=Split(x, y), calibration=Split(x, y), test=Split(x, y), source="t")


def test_check_against_input_dtype_labels_and_empty_splits() -> None:
    spec = InputSpec(shape=[1, 1, 8, 8])
    x, y = _images(10)
    with pytest.raises(InputError, match=r"int64 but model\.input\.dtype is float32"):
        check_against_input(_splits(x.astype(np.int64), y), spec, file="r.yaml")
    with pytest.raises(InputError, match="10 samples but 9 labels"):
        check_against_input(_splits(x, y[:9]), spec, file="r.yaml")
    empty = Splits(train=Split(x, y), calibration=Split(x[:0], y[:0]), test=Split(x, y), source="t")
    with pytest.raises(InputError, match="calibration split is empty"):
        check_against_input(empty, spec, file="r.yaml")
    cast = check_against_input(_splits(x.astype(np.float64), None), spec, file="r.yaml")
    assert cast.test.x.dtype == np.float32 and cast.test.y is None


# --- batches ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_sample_once(shuffle: bool) -> None:
    x = np.arange(103)
    split = Split(x, x * 10)
    seen = [(batch.x, batch.y) for batch in batches(split, 10, shuffle=shuffle, seed=5)]
    assert [len(bx) for bx, _ in seen] == [10] * 10 + [3]
    xs = np.concatenate([bx for bx, _ in seen])
    ys = np.concatenate([by for _, by in seen])
    assert np.array_equal(ys, xs * 10)
    assert np.array_equal(np.sort(xs), x)
    assert np.array_equal(xs, x) != shuffle


def test_shuffled_batches_depend_on_the_seed_only() -> None:
    split = Split(np.arange(50), None)

    def order(seed: int) -> np.ndarray:
        return np.concatenate([batch.x for batch in batches(split, 8, shuffle=True, seed=seed)])

    assert np.array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))
    assert all(batch.y is None for batch in batches(split, 8))
    assert list(batches(Split(np.arange(0), None), 8)) == []


@pytest.mark.slow
def test_a_calibration_split_of_one_sample_still_exports_with_a_dynamic_batch(tmp_path, write_recipe, cli):
    """The export example comes from the calibration split: with one sample there, the run still
    completes and the ONNX graph's batch axis stays symbolic."""

    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:40, None] / 16.0).astype(np.float32)
    np.savez(tmp_path / "few.npz", x=x, y=digits.target[:40].astype(np.int64))
    from tests.conftest import small_recipe

    recipe = small_recipe(data={"source": "npz", "path": "few.npz", "batch_size": 8,
                                "calibration_fraction": 0.02, "test_fraction": 0.3}, stages=[], quantize=None)
    result = cli("run", write_recipe(recipe), "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    results = printed_results(result.stdout)
    assert results["data"]["calibration"] == 1
    onnx_path = next((tmp_path / "runs" / "small").glob("2*/artifacts/original.onnx*/model.onnx"), None) or \
        next((tmp_path / "runs" / "small").glob("2*/**/model.onnx"))
    import onnx

    batch = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic, not fixed at 1
