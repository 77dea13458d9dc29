"""Targets by spec: `local`, `cuda[:N]`, `ssh://user@host[:port][?options]`, `adb://[SERIAL][?options]`.

A spec names its plugin in the `compress.targets` entry-point group: the scheme before `://`
(`ssh`, `adb`), or the word before `:` (`cuda:1`), or the whole spec (`local`). The plugin class
builds itself with `from_spec(spec)` (raising ValueError with a one-line reason); a class without
it takes no options and is built with no arguments. Building a target never connects: a recipe's
targets are checked when the recipe is validated, and `prepare()` connects later.
"""

from __future__ import annotations

import re
from typing import Any

from compress import registry
from compress.errors import InputError

_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def plugin_name(spec: str) -> str:
    """The entry-point name a spec belongs to ('' when it names none)."""
    scheme = spec.split("://", 1)[0] if "://" in spec else spec.split("?", 1)[0].split(":", 1)[0]
    return scheme if _NAME.fullmatch(scheme) else ""


def resolve(spec: str, *, file: str | None = None, line: int | None = None, field: str | None = None) -> Any:
    """The Target a spec names, not yet connected. A bad spec is a one-line InputError."""
    if not isinstance(spec, str) or not spec.strip() or spec != spec.strip():
        raise InputError(f"target {spec!r} is not a target spec (local, cuda[:N], ssh://user@host[:port], "
                         "adb://SERIAL)", file=file, line=line, field=field)
    name = plugin_name(spec)
    if not name:
        raise InputError(f"target {spec!r} does not start with a target name (local, cuda, ssh://, adb://)",
                         file=file, line=line, field=field)
    cls = registry.load("compress.targets", name, file=file, line=line, field=field)
    try:
        if hasattr(cls, "from_spec"):
            target = cls.from_spec(spec)
        elif spec == name:
            target = cls()
        else:
            raise ValueError(f"target {name!r} takes no options")
    except ValueError as exc:
        raise InputError(f"target {display(spec)!r}: {exc}", file=file, line=line, field=field) from None
    if not hasattr(target, "host"):
        target.host = getattr(target, "name", spec)
    if not getattr(target, "name", None):
        target.name = display(spec)
    return target


def resolve_all(specs: list[str], *, file: str | None = None, origins: list[Any] | None = None,
                field: str = "verify.targets") -> list[Any]:
    """Every target of a list; two specs that would show the same name are an error."""
    targets: list[Any] = []
    for index, spec in enumerate(specs):
        line = origins[index].line if origins else None
        where = origins[index].file if origins else file
        target = resolve(spec, file=where, line=line, field=f"{field}[{index}]")
        if any(t.name == target.name for t in targets):
            raise InputError(f"target {target.name!r} is listed twice", file=where, line=line,
                             field=f"{field}[{index}]")
        targets.append(target)
    return targets


def display(spec: str) -> str:
    """A spec as shown in tables, results and errors: its options (after `?`) and any password left out."""
    return re.sub(r"^([a-z][a-z0-9_-]*://[^/@:?]*):[^@/?]*@", r"\1:***@", spec.split("?", 1)[0])


def slug(name: str) -> str:
    """A target name made safe for a file name (ssh://pi@board:22 -> ssh-pi-board-22)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "target"


def prepare(target: Any, *, file: str | None = None, field: str | None = None) -> None:
    """Connect to a target once and check it; its one-line reason becomes an InputError."""
    from compress.runtimes.targets import TargetError

    try:
        target.prepare()
    except TargetError as exc:
        raise InputError(str(exc), file=file, field=field) from None
