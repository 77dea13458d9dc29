"""A signal that lands where raising would kill the process (a native module's import) or be lost (a
garbage-collector callback, a finalizer) is delivered once that code has returned, never dropped.
Each case runs in its own interpreter: the signal goes to that process, not to pytest."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PRELUDE = """
import os, signal, sys, time
from compress.errors import Interrupted
from compress.interrupts import signals_as_exceptions
steps = []

def wait_for_the_signal():
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sum(range(1000))  # bytecode, where Python runs its signal handlers
    steps.append("not-delivered")
"""


def _run(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "case.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + "\nprint(' '.join(steps))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(("number", "caught"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Interrupted")])
def test_a_signal_during_an_import_is_raised_after_the_module_has_loaded(tmp_path: Path, number: str,
                                                                          caught: str) -> None:
    (tmp_path / "slow_module.py").write_text(textwrap.dedent(f"""
        import os, signal, time
        os.kill(os.getpid(), signal.{number})
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            sum(range(1000))  # the handler runs here, inside the import
        LOADED = True
    """))
    steps = _run(tmp_path, f"""
        with signals_as_exceptions():
            try:
                import slow_module
                steps.append("imported" if slow_module.LOADED else "half")
                wait_for_the_signal()
            except {caught}:
                steps.append("raised")
                steps.append("loaded" if "slow_module" in sys.modules else "lost")
    """)
    assert steps == ["imported", "raised", "loaded"]


def test_a_signal_during_a_gc_callback_is_not_swallowed(tmp_path: Path) -> None:
    steps = _run(tmp_path, """
        import gc
        def callback(phase, info):
            if phase == "start" and not steps:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(100000))
                steps.append("callback-finished")
        gc.callbacks.append(callback)
        with signals_as_exceptions():
            try:
                gc.collect()
                wait_for_the_signal()
            except KeyboardInterrupt:
                steps.append("raised")
    """)
    assert steps == ["callback-finished", "raised"]


def test_a_signal_during_a_finalizer_is_not_swallowed(tmp_path: Path) -> None:
    steps = _run(tmp_path, """
        class Resource:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                sum(range(100000))
                steps.append("finalized")
        with signals_as_exceptions():
            try:
                Resource()
                wait_for_the_signal()
            except Interrupted as exc:
                steps.append(f"raised:{exc.signal_number}")
    """)
    assert steps == ["finalized", "raised:15"]


def test_elsewhere_the_signal_is_raised_where_the_program_is(tmp_path: Path) -> None:
    steps = _run(tmp_path, """
        import signal as s
        with signals_as_exceptions():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                wait_for_the_signal()
            except KeyboardInterrupt:
                steps.append("raised")
        steps.append("restored" if s.getsignal(s.SIGINT) is s.default_int_handler else "left")
    """)
    assert steps == ["raised", "restored"]


@pytest.mark.parametrize(("number", "caught"), [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "Interrupted")])
def test_a_signal_while_a_tool_converts_is_raised_when_it_returns(tmp_path: Path, number: str, caught: str) -> None:
    steps = _run(tmp_path, f"""
        from compress.interrupts import signals_held
        def converter_calling_back_into_python():
            os.kill(os.getpid(), signal.{number})
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                sum(range(1000))  # a handler that raised would raise here, inside the tool
            steps.append("tool-finished")
        with signals_as_exceptions():
            try:
                with signals_held():
                    converter_calling_back_into_python()
                steps.append("after-the-tool")
            except {caught}:
                steps.append("raised")
    """)
    assert steps == ["tool-finished", "raised"]


def test_a_tool_error_after_a_held_signal_gives_way_to_the_signal(tmp_path: Path) -> None:
    steps = _run(tmp_path, """
        from compress.interrupts import signals_held
        with signals_as_exceptions():
            try:
                with signals_held():
                    os.kill(os.getpid(), signal.SIGINT)
                    sum(range(100000))
                    raise RuntimeError("conversion failed: KeyboardInterrupt")  # how a tool reports it
            except KeyboardInterrupt:
                steps.append("interrupted")
            except RuntimeError:
                steps.append("tool-error")
    """)
    assert steps == ["interrupted"]


def test_a_held_signal_stops_compress_own_code_between_two_tool_calls(tmp_path: Path) -> None:
    steps = _run(tmp_path, """
        from compress.interrupts import deliver_held, signals_held
        with signals_as_exceptions():
            try:
                with signals_held():
                    for trial in range(3):
                        deliver_held()
                        steps.append(f"trial{trial}")
                        if trial == 0:
                            os.kill(os.getpid(), signal.SIGINT)
                            sum(range(100000))
            except KeyboardInterrupt:
                steps.append("raised")
    """)
    assert steps == ["trial0", "raised"]


def test_a_second_signal_is_not_held(tmp_path: Path) -> None:
    steps = _run(tmp_path, """
        from compress.interrupts import signals_held
        with signals_as_exceptions():
            try:
                with signals_held():
                    os.kill(os.getpid(), signal.SIGINT)
                    sum(range(100000))
                    steps.append("held")
                    os.kill(os.getpid(), signal.SIGINT)
                    wait_for_the_signal()
            except KeyboardInterrupt:
                steps.append("raised")
    """)
    assert steps == ["held", "raised"]
