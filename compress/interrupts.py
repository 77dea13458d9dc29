"""SIGINT and SIGTERM during a command: raised as KeyboardInterrupt or Interrupted where the main
thread is, except where raising would lose the signal or kill the process.

- Inside an import: an exception raised while a native extension initialises its module aborts the
  process. litert-converter's MLIR bindings (nanobind) run Python's enum code in their module init,
  and a KeyboardInterrupt there is a "Critical nanobind error" and SIGABRT: no cleanup, no exit code
  of ours.
- Inside a garbage-collector callback or a `__del__`: Python prints "Exception ignored" and goes on,
  so the run would finish as if nobody had asked it to stop (JAX's `_xla_gc_callback` runs often
  during a TFLite conversion).

There the signal is sent again a moment later, and delivered once that code has returned.

- While a format's tool converts or quantizes (`signals_held`): the converters call back into Python
  from native code (MLIR and JAX bindings, OpenVINO's frontends), where an exception either aborts the
  process or comes back as the tool's own error (a failed conversion, not an interrupt). The signal is
  held until the tool returns, or until compress's own code between two tool calls asks
  (`deliver_held`); a second signal is not held."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from compress.errors import Interrupted

RETRY_SECONDS = 0.05
_IMPORT_MACHINERY = "<frozen importlib._bootstrap"  # both _bootstrap and _bootstrap_external


def unsafe_to_raise(frame: FrameType | None) -> bool:
    """Whether this frame runs inside an import, a garbage-collector callback or a finalizer (any
    frame from it down to the entry point)."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(_IMPORT_MACHINERY) or code in callbacks or code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class _Held:
    depth = 0  # tool calls at work in the main thread
    signal: int | None = None  # the signal waiting for them to return


def _raise(number: int) -> None:
    if number == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(number)


def _deliver(number: int, frame: FrameType | None) -> None:
    if unsafe_to_raise(frame):
        later = threading.Timer(RETRY_SECONDS, os.kill, (os.getpid(), number))
        later.daemon = True
        later.start()
        return
    if _Held.depth and _Held.signal is None:
        _Held.signal = number
        return
    _Held.signal = None
    _raise(number)


def deliver_held() -> None:
    """Raise a signal held for a tool, now that compress's own code runs (between two tool calls)."""
    if _Held.signal is not None:
        number, _Held.signal = _Held.signal, None
        _raise(number)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A format's tool at work: SIGINT and SIGTERM are raised when it returns, not inside it. (Only
    the main thread receives signals: elsewhere this changes nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Held.depth += 1
    try:
        yield
    finally:
        _Held.depth -= 1
        if not _Held.depth:
            deliver_held()  # the person asked to stop: that wins over what the tool raised, if anything


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Interrupted, never inside an import. Only
    the main thread can set handlers; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _deliver) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
