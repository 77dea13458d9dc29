"""Safe YAML loading that remembers where each value sits, and `--set key.path=value` overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compress.errors import InputError

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Origin:
    file: str | None
    line: int | None


@dataclass
class LocatedYaml:
    """Parsed YAML plus the line of every key, so errors can point into the file."""

    file: Path
    data: Any
    lines: dict[PathKey, int]
    overridden: list[PathKey] = field(default_factory=list)

    def origin(self, path: PathKey) -> Origin:
        for done in self.overridden:
            if path[: len(done)] == done:
                return Origin(file="--set", line=None)
        probe = tuple(path)
        while probe and probe not in self.lines:
            probe = probe[:-1]
        return Origin(file=str(self.file), line=self.lines.get(probe))


def format_path(path: PathKey) -> str:
    """('stages', 1, 'distill', 'temperature') -> 'stages[1].distill.temperature'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _index_lines(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: Path) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise InputError(f"duplicate key {key!r}", file=file, line=key_node.start_mark.line + 1,
                                 field=format_path((*path, key)))
            seen.add(key)
            _index_lines(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), lines, file)


def load_located_yaml(file: Path, what: str = "recipe file") -> LocatedYaml:
    """A YAML file read within bounds (compress.inputs), with the line of every value."""
    from compress.inputs import RECIPE_BYTES, check_yaml_size, read_text

    text = read_text(file, what, RECIPE_BYTES)
    try:
        loader = yaml.SafeLoader(text)  # safe: builds only plain data, never Python objects
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}".splitlines()[0], file=file) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            check_yaml_size(node, file)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise InputError(f"invalid YAML: {exc.problem or exc}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    lines: dict[PathKey, int] = {}
    if node is not None:
        _index_lines(node, (), lines, file)
    return LocatedYaml(file=file, data=data, lines=lines)


def _override_value(text: str) -> Any:
    """A --set value, read as YAML within the same bounds as a recipe."""
    from compress.inputs import check_yaml_size

    if len(text) > 65536 or any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise ValueError("the value is too long or holds control characters")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_yaml_size(node, Path("--set"))
        return loader.construct_document(node)
    finally:
        loader.dispose()


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_key_path(text: str) -> PathKey:
    """'stages[1].distill.epochs' (or 'stages.1.distill.epochs') -> ('stages', 1, 'distill', 'epochs')."""
    parts: list[str | int] = []
    position = 0
    for match in _PART.finditer(text):
        if match.start() != position and text[position:match.start()] != ".":
            raise ValueError(f"cannot read key path {text!r}")
        name, index = match.groups()
        if index is not None:
            parts.append(int(index))
        else:
            parts.append(int(name) if name.isdigit() else name)
        position = match.end()
    if not parts or position != len(text):
        raise ValueError(f"cannot read key path {text!r}")
    return tuple(parts)


def apply_overrides(located: LocatedYaml, overrides: list[str]) -> None:
    """Apply `key.path=value` overrides in order; values are read as YAML (safely)."""
    for expr in overrides:
        key, sep, raw = expr.partition("=")
        if not sep:
            raise InputError(f"--set {expr!r}: expected key.path=value")
        try:
            path = parse_key_path(key.strip())
            value = _override_value(raw) if raw.strip() else None
        except (ValueError, yaml.YAMLError) as exc:
            raise InputError(f"--set {expr!r}: {exc}") from None
        if not isinstance(located.data, dict):
            raise InputError("cannot apply --set to a recipe that is not a mapping", file=located.file)
        node: Any = located.data
        for depth, part in enumerate(path[:-1]):
            here = format_path(path[: depth + 1])
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise InputError(f"--set {expr!r}: {here} does not exist")
                node = node[part]
            else:
                if not isinstance(node, dict):
                    raise InputError(f"--set {expr!r}: {here} is not inside a mapping")
                node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise InputError(f"--set {expr!r}: {format_path(path)} does not exist")
        elif not isinstance(node, dict):
            raise InputError(f"--set {expr!r}: {format_path(path[:-1])} is not a mapping")
        node[last] = value
        located.overridden.append(path)
