"""Plugins found through entry points and imported only when a recipe names them.

Built-ins register through the same groups a third party uses (see pyproject.toml), so the plugin
path is exercised by every run. Each plugin is checked against its contract (compress.contracts)
when it is loaded. A plugin may declare `requires` (import names of the optional libraries it
needs), `requires_any` (alternatives, one of which must be there) and `install_hint` (the pip
command that brings them).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from compress.contracts import missing_members
from compress.errors import InputError

GROUPS = {
    "compress.stages": "stage",
    "compress.formats": "format",
    "compress.runtimes": "runtime",
    "compress.targets": "target",
    "compress.datasets": "dataset",
    "compress.metrics": "metric",
}


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)  # first wins: a duplicate name never silently replaces ours
    return found


def names(group: str) -> list[str]:
    return sorted(_entry_points(group))


def missing_requirements(plugin: Any) -> list[str]:
    """Import names the plugin declares and this environment lacks (checked without importing them),
    the same check the device agent makes of a runtime backend."""
    from compress.runtimes.agent import missing

    return missing(plugin)


def load(group: str, name: str, *, file: str | None = None, line: int | None = None,
         field: str | None = None) -> Any:
    """Import one plugin by name; a missing or broken plugin is a one-line InputError."""
    kind = GROUPS[group]
    available = _entry_points(group)
    ep = available.get(name)
    if ep is None:
        close = difflib.get_close_matches(name, list(available), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        installed = ", ".join(sorted(available)) or "none"
        raise InputError(f"no {kind} plugin named {name!r} is installed{hint}; installed: {installed}",
                         file=file, line=line, field=field)
    dist = f" from {ep.dist.name}" if ep.dist else ""
    try:
        plugin = ep.load()
    except Exception as exc:  # a third-party plugin can fail in any way; report it, don't crash
        raise InputError(f"{kind} plugin {name!r}{dist} failed to import: {type(exc).__name__}: {exc}",
                         file=file, line=line, field=field) from None
    lacking = missing_members(kind, plugin)
    if lacking:
        raise InputError(f"{kind} plugin {name!r}{dist} ({ep.value}) does not meet the {kind} contract: it has no "
                         f"{', '.join(lacking)} (see compress.contracts)", file=file, line=line, field=field)
    return plugin


def require(group: str, name: str, *, file: str | None = None, line: int | None = None,
            field: str | None = None) -> Any:
    """Load a plugin and check its optional libraries are installed."""
    plugin = load(group, name, file=file, line=line, field=field)
    missing = missing_requirements(plugin)
    if missing:
        hint = getattr(plugin, "install_hint", "")
        raise InputError(f"{GROUPS[group]} {name!r} needs {', '.join(missing)}, which is not installed"
                         + (f"; install it with: {hint}" if hint else ""), file=file, line=line, field=field)
    return plugin


@dataclass(frozen=True)
class PluginInfo:
    group: str
    name: str
    value: str
    distribution: str
    status: str  # "ok", "missing: ..." or "broken: ..."
    hint: str


def inventory() -> list[PluginInfo]:
    """Every installed plugin, with what it lacks. Imports each plugin module (they import their
    heavy libraries lazily, so this stays cheap)."""
    rows: list[PluginInfo] = []
    for group in GROUPS:
        for name, ep in sorted(_entry_points(group).items()):
            dist = ep.dist.name if ep.dist else "?"
            try:
                plugin = ep.load()
            except Exception as exc:
                rows.append(PluginInfo(group, name, ep.value, dist, f"broken: {type(exc).__name__}: {exc}", ""))
                continue
            lacking = missing_members(GROUPS[group], plugin)
            if lacking:
                rows.append(PluginInfo(group, name, ep.value, dist, f"broken: no {', '.join(lacking)}", ""))
                continue
            missing = missing_requirements(plugin)
            status = "ok" if not missing else "missing: " + ", ".join(missing)
            rows.append(PluginInfo(group, name, ep.value, dist, status, getattr(plugin, "install_hint", "")))
    return rows
