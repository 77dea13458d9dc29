"""The terminal is for the person: one progress display for the whole run, library output in run.log.

`RunConsole` is a rich Console that owns one `Progress`: the run's steps and measurements advance
one overall bar (elapsed time and ETA), and a long step (training, distillation) adds a bar of its
own to the same display (rich allows one live display per console). Call sites use `activity()`,
`advance()` and `task()`, which also work on a plain Console (a line per activity, no bars), so
code that is not run by the pipeline keeps working.

`quiet_terminal()` sends everything the process and its children write to file descriptors 1 and 2
(Python prints, warnings, C++ libraries' own logging, NNCF's and litert-torch's progress lines) to
run.log while the console keeps writing to the terminal.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console


class RunConsole(Console):
    """A Console with one progress display: an overall bar and, while a long step runs, its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("log_path", False)  # a person reads what happened, not which source line said it
        super().__init__(*args, **kwargs)
        self.progress: Any = None
        self._overall: Any = None

    @contextlib.contextmanager
    def running(self, total: int, description: str) -> Iterator[None]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # transient: the bars leave the screen when the run ends, the summary stays
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", style="bold"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self, transient=True,
                                 redirect_stdout=False, redirect_stderr=False)  # library prints stay in run.log
        self._overall = self.progress.add_task(description, total=total)
        self.progress.start()
        try:
            yield
        finally:
            self.progress.stop()
            self.progress = self._overall = None


@contextlib.contextmanager
def running(console: Console, total: int, description: str) -> Iterator[None]:
    """The run's overall bar on a RunConsole; nothing on a plain one."""
    if isinstance(console, RunConsole):
        with console.running(total, description):
            yield
    else:
        yield


def grow(console: Console, units: int) -> None:
    """More work than first counted (the measurements are known once the artifacts are)."""
    progress = getattr(console, "progress", None)
    if progress is not None:
        overall = console._overall  # type: ignore[attr-defined]
        total = next(t.total for t in progress.tasks if t.id == overall) or 0
        progress.update(overall, total=total + units)


def activity(console: Console, text: str) -> None:
    """What the run is doing now: the progress line while one is shown, else a console line; always
    a line in run.log, where a step's start is recorded (the terminal's line is gone when it ends)."""
    from rich.text import Text

    logging.getLogger("compress.run").info("%s", Text.from_markup(text).plain)
    progress = getattr(console, "progress", None)
    if progress is not None:
        progress.update(console._overall, description=text)  # type: ignore[attr-defined]
    else:
        console.log(text)


def advance(console: Console, units: int = 1) -> None:
    progress = getattr(console, "progress", None)
    if progress is not None:
        progress.update(console._overall, advance=units)  # type: ignore[attr-defined]


@contextlib.contextmanager
def task(console: Console, description: str, total: int) -> Iterator[Callable[..., None]]:
    """A long step's own bar; yields `update(advance=1, note="loss 0.12")`."""
    progress = getattr(console, "progress", None)
    own = progress is None
    if own:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console, transient=False)
        progress.start()
    handle = progress.add_task(description, total=total)

    def update(advance: int = 1, note: str = "") -> None:
        progress.update(handle, advance=advance, description=f"{description} {note}".rstrip())

    try:
        yield update
    finally:
        if own:
            progress.stop()
        else:
            progress.remove_task(handle)


@contextlib.contextmanager
def quiet_terminal(log_path: Path, console: Console, *, verbose: bool = False) -> Iterator[None]:
    """Everything written to fds 1 and 2 goes to `log_path` (appended) while the console keeps the
    terminal. With `verbose`, nothing is moved and compress's own log is shown as well."""
    if verbose:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger("compress").addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger("compress").removeHandler(handler)
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # first: nothing to undo if it fails
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    previous_file = console._file  # None: the console follows sys.stderr (or sys.stdout)
    terminal = None
    if _is_fd(console.file, (1, 2)):
        # the console writes to the terminal the process started with, not to what fd 2 becomes
        terminal = os.fdopen(os.dup(console.file.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
        console.file = terminal
    # A native crash (SIGSEGV, SIGABRT) kills the process with no exception to report: the Python
    # stack of every thread is written to run.log, so the crash can be told apart from a bug of ours.
    # (Left alone where a host, such as pytest, has enabled it already.)
    crash_log = None if faulthandler.is_enabled() else os.fdopen(os.dup(log_fd), "w")
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        if crash_log is not None:
            faulthandler.enable(file=crash_log, all_threads=True)
        yield
    finally:
        if crash_log is not None:
            faulthandler.disable()
            crash_log.close()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)
        if terminal is not None:
            console._file = previous_file
            terminal.close()


def _is_fd(stream: Any, fds: tuple[int, ...]) -> bool:
    try:
        return stream.fileno() in fds
    except (AttributeError, OSError, ValueError):
        return False
