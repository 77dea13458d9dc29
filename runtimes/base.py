"""The Runtime and Target contracts. Runtimes delegate to the device agent's backends, so the code
that runs a model in-process and on a device is the same code."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np


class Session(Protocol):
    input_names: list[str] | None

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class Runtime(Protocol):
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    requires: ClassVar[tuple[str, ...]]
    install_hint: ClassVar[str]

    @classmethod
    def load(cls, path: Path, device: str = "cpu", threads: int = 1) -> Session: ...


class Target(Protocol):
    name: str

    def measure(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]: ...


class AgentRuntime:
    """A runtime whose sessions are the device agent's backend of the same name."""

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    @classmethod
    def load(cls, path: Path, device: str = "cpu", threads: int = 1) -> Session:
        from runtimes.agent import load_backend

        return load_backend(cls.name, str(path), threads, device)
