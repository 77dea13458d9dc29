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
    """Where the device agent runs (docs/targets.md). Built from a spec by `compress.targets.resolve`;
    building one never connects, so a recipe is validated before anything runs.

    name:  the spec as shown in results (options after `?` left out: they may name key files).
    host:  the machine measured. Targets with the same host are measured one after another (a GPU
           run perturbs CPU timings on the same machine); different hosts in parallel.
    prepare():  connect once and check the device (host key, login, Python, GPU); raises
           compress.errors.InputError with a one-line reason. Called before any measurement.
    measure(request, timeout_s):  one agent request (protocol 1) with local paths: `model` (a file,
           or a folder), `inputs` (.npz) or `random_inputs`, `outputs` (a path to write, or null).
           Returns the agent's response dict with `ok` and `status`: ok, failed, timeout, bad_input
           or incomplete (the connection dropped: never a pass). It never raises for a failure of
           the measurement itself, and kills what it started at `timeout_s`.
    """

    name: str
    host: str

    def prepare(self) -> None: ...

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
