"""Files a user hands the tool, read within bounds: regular files only, a size cap, no control
characters; YAML documents of bounded size and depth (aliases counted as what they expand to); and
the path policy (docs/security.md): an input stays inside its recipe's folder unless the recipe
names a folder outside it in `paths.allow_outside`."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from compress.errors import InputError

RECIPE_BYTES = 1 << 20  # a recipe or gates file: a screenful of YAML, far below this
RESULTS_BYTES = 256 << 20  # results.json or a baseline: thousands of measurements fit
YAML_VALUES = 100_000  # values a YAML document may expand to, its aliases followed
YAML_DEPTH = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


def regular_file(path: Path, what: str, *, field: str | None = None, file: str | None = None) -> os.stat_result:
    """The file's stat, when it is a regular file (not a device, a pipe or a folder)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{what} not found" + (f": {path}" if file else ""), file=file or str(path),
                         field=field) from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", file=file or str(path), field=field) from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device or a pipe, not a regular file"
        raise InputError(f"{what} {path} is {kind}", file=file or str(path), field=field)
    return info


def read_text(path: Path, what: str, limit: int) -> str:
    """A UTF-8 text file of at most `limit` bytes, with no control characters but tab and newlines."""
    info = regular_file(path, what)
    if info.st_size > limit:
        raise InputError(f"{what} is {info.st_size:,} bytes, more than the {limit:,} a {what} may be", file=path)
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}", file=path) from None
    if len(data) > limit:  # it grew while being read
        raise InputError(f"{what} is more than the {limit:,} bytes a {what} may be", file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text (byte {exc.start})", file=path) from None
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise InputError(f"{what} holds a control character ({bad.group()!r}), which no {what} has", file=path,
                         line=line)
    return text


def check_yaml_size(node: Any, path: Path) -> None:
    """Refuse a YAML document whose values, aliases followed, are too many or nested too deep (a
    "billion laughs" document expands a few lines into billions of values)."""
    import yaml

    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()

    def visit(current: Any) -> tuple[int, int]:
        key = id(current)
        if key in open_nodes:
            raise InputError("a YAML alias refers to the value that holds it (a document without end); refused",
                             file=path, line=current.start_mark.line + 1)
        if key in sizes:
            return sizes[key], depths[key]
        open_nodes.add(key)
        if isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        elif isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        else:
            children = []
        size, depth = 1, 1
        for child in children:
            child_size, child_depth = visit(child)
            size, depth = size + child_size, max(depth, child_depth + 1)
            if size > YAML_VALUES or depth > YAML_DEPTH:
                break
        open_nodes.discard(key)
        sizes[key], depths[key] = size, depth
        return size, depth

    size, depth = visit(node)
    if size > YAML_VALUES:
        raise InputError(f"the document expands to more than {YAML_VALUES:,} values (through its aliases); refused",
                         file=path)
    if depth > YAML_DEPTH:
        raise InputError(f"the document nests deeper than {YAML_DEPTH} levels; refused", file=path)


def inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def input_path(value: str, *, folder: Path, allowed: list[Path], file: str, field: str, what: str = "input",
               kind: str = "file") -> Path:
    """An input a recipe names, relative to the recipe's folder: after resolving symlinks and `..`, it
    must stay inside that folder or one the recipe allows (`paths.allow_outside`), and be a regular
    file (or a folder, for kind "folder")."""
    raw = Path(value).expanduser()
    resolved = (raw if raw.is_absolute() else folder / raw).resolve()
    roots = [folder.resolve(), *(a.resolve() for a in allowed)]
    if not any(inside(resolved, root) for root in roots):
        raise InputError(f"{value!r} resolves to {resolved}, outside the recipe's folder {roots[0]}; refused (list the "
                         "folder under paths.allow_outside to read it)", file=file, field=field)
    if kind == "folder":
        if not resolved.is_dir():
            raise InputError(f"{what} folder not found: {resolved}", file=file, field=field)
        return resolved
    regular_file(resolved, what, field=field, file=file)
    return resolved
