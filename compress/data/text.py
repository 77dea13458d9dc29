"""`text`: a character-level language-modelling source over a plain-text corpus.

The default corpus ships with the package (compress/data/corpus/kjv.txt, public domain); a recipe
may name its own UTF-8 text file with `data.path`. Text is lowercased and read against a fixed
alphabet (anything outside it maps to id 0), so the vocabulary never depends on the corpus and no
tokenizer is needed.

Samples are windows of the model's context length T (`model.input.shape[1]`): x = ids[t:t+T],
y = ids[t+1:t+T+1] (the next token at every position). The corpus is cut into three contiguous
parts, in order: train, calibration, test (`data.calibration_fraction`, `data.test_fraction`), so
the held-out text is never seen in training. Calibration and test windows do not overlap (stride
T); training windows overlap by half (stride T // 2).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.data.base import Split, Splits
from compress.errors import InputError

if TYPE_CHECKING:
    from compress.contracts import DataContext
    from compress.recipe import DataConfig

UNKNOWN = "\x00"  # id 0: any character outside the alphabet
ALPHABET = UNKNOWN + "\n !\"'(),-.:;?" + "0123456789" + "abcdefghijklmnopqrstuvwxyz"
VOCAB_SIZE = len(ALPHABET)
DEFAULT_CORPUS = "kjv.txt"

_LOOKUP = np.zeros(128, dtype=np.int64)  # ASCII -> id; non-ASCII characters map to 0
for _index, _char in enumerate(ALPHABET):
    _LOOKUP[ord(_char)] = _index


def encode(text: str) -> np.ndarray:
    """Lowercased text -> int64 ids in [0, VOCAB_SIZE)."""
    codes = np.frombuffer(text.lower().encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return np.where(codes < 128, _LOOKUP[np.minimum(codes, 127)], 0)


def decode(ids: np.ndarray | list[int]) -> str:
    return "".join(ALPHABET[int(i)] for i in np.asarray(ids).reshape(-1))


def default_corpus() -> str:
    return resources.files("compress.data").joinpath("corpus", DEFAULT_CORPUS).read_text(encoding="utf-8")


def _windows(ids: np.ndarray, context: int, stride: int) -> Split:
    """Every window of `context` tokens (and its next-token labels) starting at a multiple of `stride`."""
    starts = np.arange(0, len(ids) - context, stride)
    index = starts[:, None] + np.arange(context)[None, :]
    return Split(ids[index], ids[index + 1])


def text(config: DataConfig, ctx: DataContext) -> Splits:
    file = ctx.file
    if len(ctx.input_shape) != 2 or not ctx.input_dtype.startswith("int"):
        raise InputError(f"the text source feeds token ids of shape [batch, context] (int64); model.input is "
                         f"shape {ctx.input_shape}, dtype {ctx.input_dtype}", file=file, field="model.input.shape")
    context = ctx.input_shape[1]
    if config.path:
        path = ctx.resolve_path(config.path, what="text file")
        try:
            corpus = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"text file not found: {path}", file=file, field="data.path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path} as UTF-8 text: {exc}", file=file, field="data.path") from None
        source = f"text:{Path(path).name}"
    else:
        corpus, source = default_corpus(), f"text:{DEFAULT_CORPUS}"
    ids = encode(corpus)
    n = len(ids)
    test_start = round(n * (1 - config.test_fraction))
    calibration_start = round(n * (1 - config.test_fraction - config.calibration_fraction))
    parts = {"train": (ids[:calibration_start], max(1, context // 2)),
             "calibration": (ids[calibration_start:test_start], context),
             "test": (ids[test_start:], context)}
    splits: dict[str, Split] = {}
    for name, (part, stride) in parts.items():
        if len(part) <= context:
            raise InputError(f"the {name} part of the text ({len(part)} characters) is shorter than one window "
                             f"of model.input.shape[1] = {context} tokens plus its next token: use a longer "
                             "text or a shorter context", file=file, field="model.input.shape")
        splits[name] = _windows(part, context, stride)
    return Splits(**splits, source=source)
