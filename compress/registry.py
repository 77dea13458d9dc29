"""Plugins found through entry points and imported only when a recipe names them.

Built-ins register through the same groups a third party uses (see pyproject.toml), so the plugin
path is exercised by every run. A plugin class may declare `requires` (import names of the optional
libraries it needs) and `install_hint` (the pip command that brings them).
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from compress.errors import InputError

GROUPS = {
    "compress.stages": "stage",
    "compress.exporters": "exporter",
    "compress.quantizers": "quantizer",
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
    """Import names the plugin declares and this environment lacks (checked without importing).
    A plugin with alternatives (LiteRT or tflite_runtime) answers through its own `missing()`."""
    if callable(getattr(plugin, "missing", None)):
        return list(plugin.missing())
    return [name for name in getattr(plugin, "requires", ()) if importlib.util.find_spec(name) is None]


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
    try:
        return ep.load()
    except Exception as exc:  # a third-party plugin can fail in any way; report it, don't crash
        dist = f" from {ep.dist.name}" if ep.dist else ""
        raise InputError(f"{kind} plugin {name!r}{dist} failed to import: {type(exc).__name__}: {exc}",
                         file=file, line=line, field=field) from None


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
            missing = missing_requirements(plugin)
            status = "ok" if not missing else "missing: " + ", ".join(missing)
            rows.append(PluginInfo(group, name, ep.value, dist, status, getattr(plugin, "install_hint", "")))
    return rows
