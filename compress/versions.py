"""Versions of the libraries a run used: recorded in versions.json, and part of every step's cache
key, so that upgrading a library a step uses rebuilds that step on `--resume`."""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from compress import __version__

# What the core itself runs on; a run records these and the libraries of every plugin it used.
CORE = ("edge-compress", "torch", "numpy", "scikit-learn", "safetensors", "pydantic", "pyyaml", "click", "rich")


@cache
def installed(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def of(distributions: tuple[str, ...] | list[str]) -> dict[str, str | None]:
    """{distribution: version} for a step's key; compress's own version is always there."""
    found = {name: installed(name) for name in sorted(set(distributions))}
    found["edge-compress"] = __version__
    return found


def environment(libraries: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """What versions.json records: Python, the platform, the core's libraries and `libraries` (those
    of the plugins a run uses), each that is installed."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in dict.fromkeys([*CORE, *libraries]):
        value = installed(name)
        if value is not None:
            found[name] = value
    return found
