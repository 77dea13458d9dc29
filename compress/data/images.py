"""`image_folder`: a folder of images, one subfolder per class (the ImageFolder layout).

`data.path` holds one subfolder per class; a class's index is its place among the sorted subfolder
names. Every image (.jpg .jpeg .png .bmp .webp, any case, in a class folder or below it) is read
with Pillow, converted to RGB (grey when the model input has one channel), resized so its shorter
side is `data.images.resize` (default: the crop / 0.875, as torchvision's ImageNet evaluation
does), center-cropped to the model input's height and width, scaled to [0, 1] and normalized with
`data.images.mean` / `std`: float32 NCHW samples, int64 labels.

Memory stays bounded however large the folder: images are decoded one at a time into a
memory-mapped .npy file in a cache folder (`$COMPRESS_CACHE_DIR/images`, else
`~/.cache/compress/images`), written under a temporary name and renamed once complete, then opened
read-only. Its name hashes everything its contents depend on (every file's path, size and
modification time; the preprocessing; the split settings), so a later run with the same folder
reuses it without decoding. Rows are laid out split after split (train, calibration, test; each in
the folder's order), so each split is a contiguous slice of the memory map, not a copy in memory;
the splits are the ones `seeded_splits` draws (stratified and seeded as for every source).

Images are untrusted input: a symlink that leads outside the folder is refused, decompression bombs
(more pixels than Pillow's Image.MAX_IMAGE_PIXELS) are refused, and an image Pillow cannot read is a
one-line error naming it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.data.base import Split, Splits, seeded_splits
from compress.errors import InputError, resource_error

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from compress.contracts import DataContext
    from compress.recipe import DataConfig, ImagesConfig

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels of the model input -> Pillow mode
CROP_RATIO = 0.875  # the crop's share of the resized image's shorter side, by default
CACHE_VERSION = "1"  # part of the cache key: bump when the decoding changes


@dataclass(frozen=True)
class Picture:
    """One image of the folder: where it is, its path relative to the folder, and its class."""

    path: Path
    relative: str
    label: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Preprocess:
    """How every image becomes one sample."""

    channels: int
    height: int
    width: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def mode(self) -> str:
        return MODES[self.channels]


def image_folder(config: DataConfig, ctx: DataContext) -> Splits:
    assert config.path is not None  # the recipe schema requires it for this source
    root = ctx.resolve_path(config.path, field="data.path", what="image", kind="folder")
    prep = _preprocess(config.images, ctx)
    pictures = _list_images(root, config.images.max_images, ctx.file)
    labels = np.array([p.label for p in pictures], dtype=np.int64)
    source = f"image_folder:{root.name}"
    # The seeded, stratified splits of the images' indices: rows are then written split after split.
    drawn = seeded_splits(np.arange(len(pictures), dtype=np.int64), labels,
                          calibration_fraction=config.calibration_fraction, test_fraction=config.test_fraction,
                          seed=config.seed, source=source, file=ctx.file)
    parts = [drawn.train.x, drawn.calibration.x, drawn.test.x]
    order = np.concatenate(parts)
    key = _cache_key(root, pictures, prep, order)
    samples = _cached_samples(key, [pictures[i] for i in order], root, prep, ctx.file)
    bounds = np.cumsum([0, *(len(part) for part in parts)])
    splits = {name: Split(samples[bounds[i]:bounds[i + 1]], labels[part])
              for i, (name, part) in enumerate(zip(("train", "calibration", "test"), parts, strict=True))}
    return Splits(**splits, source=source)


# --- what the model takes ------------------------------------------------------------------------

def _preprocess(images: ImagesConfig, ctx: DataContext) -> Preprocess:
    shape = ctx.input_shape
    if len(shape) != 4 or shape[1] not in MODES or not ctx.input_dtype.startswith("float"):
        raise InputError(f"image_folder feeds images of shape [batch, channels (1, 3 or 4), height, width] (float32); "
                         f"model.input is shape {shape}, dtype {ctx.input_dtype}", file=ctx.file,
                         field="model.input.shape")
    channels, height, width = shape[1], shape[2], shape[3]
    for name, values in (("mean", images.mean), ("std", images.std)):
        if len(values) not in (1, channels):
            raise InputError(f"data.images.{name} has {len(values)} values; the model input has {channels} "
                             f"channel{'s' if channels > 1 else ''} (give {channels}, or 1 for all)", file=ctx.file,
                             field=f"data.images.{name}")
    resize = images.resize if images.resize is not None else round(max(height, width) / CROP_RATIO)
    if resize < max(height, width):
        raise InputError(f"data.images.resize {resize} is smaller than the {height}x{width} crop the model input "
                         "takes", file=ctx.file, field="data.images.resize")
    return Preprocess(channels=channels, height=height, width=width, resize=resize,
                      mean=tuple(float(v) for v in images.mean) * (channels if len(images.mean) == 1 else 1),
                      std=tuple(float(v) for v in images.std) * (channels if len(images.std) == 1 else 1))


# --- the folder ----------------------------------------------------------------------------------

def _list_images(root: Path, max_images: int, file: str) -> list[Picture]:
    """Every image of every class folder, in a fixed order (classes sorted, then paths sorted)."""
    classes = sorted(entry.name for entry in os.scandir(root) if not entry.name.startswith(".") and _is_dir(entry))
    if len(classes) < 2:
        raise InputError(f"image folder {root} has {len(classes)} class subfolder{'s' if len(classes) != 1 else ''}"
                         f"{' (' + classes[0] + ')' if classes else ''}: a classifier's images need one subfolder "
                         "per class, at least 2", file=file, field="data.path")
    pictures: list[Picture] = []
    for label, name in enumerate(classes):
        folder = root / name
        _inside(folder, root, name, file)
        count = 0
        for path in _walk(folder):
            relative = path.relative_to(root).as_posix()
            info = _inside(path, root, relative, file)
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{relative} in the image folder is not a regular file", file=file, field="data.path")
            pictures.append(Picture(path, relative, label, info.st_size, info.st_mtime_ns))
            count += 1
            if len(pictures) > max_images:
                raise InputError(f"image folder {root} holds more than data.images.max_images = {max_images:,} "
                                 "images (raise it, or use a smaller folder)", file=file, field="data.path")
        if count == 0:
            raise InputError(f"class folder {name!r} of {root} holds no images ({', '.join(SUFFIXES)})", file=file,
                             field="data.path")
    return pictures


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows a symlink: where it leads is checked after
    except OSError:
        return False


def _walk(folder: Path) -> list[Path]:
    """The images below a class folder, sorted; hidden files and folders are skipped, and symlinked
    folders are not followed."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(current) / f for f in sorted(files)
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in SUFFIXES)
    return found


def _inside(path: Path, root: Path, relative: str, file: str) -> os.stat_result:
    """The stat of what `path` leads to, refusing a symlink that leads outside the image folder."""
    try:
        resolved = path.resolve(strict=True)
        info = resolved.stat()
    except (OSError, RuntimeError) as exc:  # a dangling symlink, a loop
        raise InputError(f"cannot read {relative} in the image folder: {getattr(exc, 'strerror', None) or exc}",
                         file=file, field="data.path") from None
    if not resolved.is_relative_to(root):
        raise InputError(f"{relative} in the image folder is a symlink to {resolved}, outside the folder; refused",
                         file=file, field="data.path")
    return info


# --- the cache -----------------------------------------------------------------------------------

def cache_folder() -> Path:
    parent = os.environ.get("COMPRESS_CACHE_DIR")
    return (Path(parent).expanduser() if parent else Path.home() / ".cache" / "compress") / "images"


def _cache_key(root: Path, pictures: list[Picture], prep: Preprocess, order: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(repr((CACHE_VERSION, str(root), prep.resize, (prep.height, prep.width), prep.mean, prep.std,
                        prep.channels)).encode())
    for picture in pictures:
        digest.update(repr((picture.relative, picture.size, picture.mtime_ns)).encode())
    digest.update(np.ascontiguousarray(order, dtype=np.int64).tobytes())  # the split layout
    return digest.hexdigest()


def _cached_samples(key: str, pictures: list[Picture], root: Path, prep: Preprocess, file: str) -> np.ndarray:
    """The decoded images, in the order given, as a read-only memory map (decoded once per key)."""
    shape = (len(pictures), prep.channels, prep.height, prep.width)
    folder = cache_folder()
    path = folder / f"{key}.npy"
    if path.is_file():
        try:
            samples = np.load(path, mmap_mode="r", allow_pickle=False)
            if samples.shape == shape and samples.dtype == np.float32:
                return samples
        except (OSError, ValueError):
            pass  # a damaged cache file: decode again
    temporary = folder / f"{key}.{os.getpid()}.partial.npy"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        needed = int(np.prod(shape)) * 4
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise InputError(f"decoding the image folder needs {needed:,} bytes in {folder}; {free:,} are free "
                             "(set COMPRESS_CACHE_DIR to a folder on a larger disk)", file=file, field="data.path")
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=shape)
        try:
            for index, picture in enumerate(pictures):
                out[index] = decode(picture, root, prep, file)
            out.flush()
        finally:
            del out  # close the map before renaming the file
        os.replace(temporary, path)
    except OSError as exc:
        running_out = resource_error(exc, "data", str(folder))
        if running_out is not None:
            raise running_out from None
        raise InputError(f"cannot write the decoded images to {folder}: {exc.strerror or exc}", file=file,
                         field="data.path") from None
    finally:
        temporary.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r", allow_pickle=False)


# --- one image -----------------------------------------------------------------------------------

def decode(picture: Picture, root: Path, prep: Preprocess, file: str) -> np.ndarray:
    """One image as a float32 [channels, height, width] sample; a one-line error naming it when
    Pillow cannot read it or it is a decompression bomb."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(picture.path) as image:
                pixels = _fit(image, prep)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{picture.relative} in the image folder has more pixels than the "
                         f"{Image.MAX_IMAGE_PIXELS:,} Pillow reads safely (a decompression bomb?); refused",
                         file=file, field="data.path") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise many kinds for a damaged file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {picture.relative} in the image folder as an image: {reason}", file=file,
                         field="data.path") from None
    array = np.asarray(pixels, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    mean = np.array(prep.mean, dtype=np.float32)[:, None, None]
    std = np.array(prep.std, dtype=np.float32)[:, None, None]
    return (array - mean) / std


def _fit(image: PILImage.Image, prep: Preprocess) -> PILImage.Image:
    """Resize (shorter side to prep.resize, bilinear) and center-crop to the model's height and width."""
    from PIL import Image

    width, height = image.size
    # as torchvision's Resize(int): the shorter side exactly, the longer one truncated
    if width <= height:
        size = (prep.resize, int(prep.resize * height / width))
    else:
        size = (int(prep.resize * width / height), prep.resize)
    limit = Image.MAX_IMAGE_PIXELS or 0
    if limit and size[0] * size[1] > limit:  # a sliver of an image (1 x 10,000) grows huge resized
        raise ValueError(f"its {width}x{height} pixels resized to {size[0]}x{size[1]} would be more than the "
                         f"{limit:,} Pillow reads safely")
    # A large JPEG decodes at 1/2, 1/4 or 1/8 scale, to no less than twice the size it is resized to:
    # several times faster, within a grey level of a full decode.
    image.draft(None, (2 * size[0], 2 * size[1]))
    image = image.convert(prep.mode)  # palette, CMYK, 16-bit and alpha images alike
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - prep.width) / 2)
    top = round((size[1] - prep.height) / 2)
    return image.crop((left, top, left + prep.width, top + prep.height))
