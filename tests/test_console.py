"""The terminal is for the person: what libraries print goes to run.log, the console keeps the terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, sys, warnings, logging
    from pathlib import Path
    from compress.console import RunConsole, quiet_terminal
    console = RunConsole(stderr=True)
    verbose = sys.argv[2] == "verbose"
    with quiet_terminal(Path(sys.argv[1]), console, verbose=verbose):
        console.print("for the person")
        print("a library's print")
        os.write(1, b"a native write to fd 1\\n")
        os.write(2, b"a native write to fd 2\\n")
        warnings.warn("a library's warning", FutureWarning)
        logging.getLogger("compress.run").warning("compress's own log line")
        subprocess_line = __import__("subprocess").run(["echo", "a child process"], check=True)
    print("after the run")
""")


def _run(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log), mode], capture_output=True, text=True,
                          check=True, timeout=60)
    return done, log.read_text() if log.exists() else ""


LIBRARY = ["a library's print", "a native write to fd 1", "a native write to fd 2", "a library's warning",
           "a child process"]


def test_library_output_goes_to_the_log_and_the_console_to_the_terminal(tmp_path):
    done, log = _run(tmp_path, "quiet")
    terminal = done.stdout + done.stderr
    assert "for the person" in done.stderr and "after the run" in done.stdout  # fds are given back
    for line in LIBRARY:
        assert line in log and line not in terminal, line
    assert "for the person" not in log


def test_verbose_leaves_the_terminal_as_it_is_and_shows_compress_log(tmp_path):
    done, log = _run(tmp_path, "verbose")
    terminal = done.stdout + done.stderr
    for line in [*LIBRARY, "for the person", "compress's own log line"]:
        assert line in terminal, line
    assert log == ""


CRASH = textwrap.dedent("""
    import faulthandler, sys
    from pathlib import Path
    from compress.console import RunConsole, quiet_terminal
    def converting_the_model():
        faulthandler._sigabrt()  # what a native library's abort() does
    with quiet_terminal(Path(sys.argv[1]), RunConsole(stderr=True)):
        converting_the_model()
""")


def test_a_native_crash_leaves_the_python_stack_in_the_log(tmp_path):
    log = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-c", CRASH, str(log)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -6
    text = log.read_text()
    assert "Fatal Python error: Aborted" in text and "converting_the_model" in text, text
    assert "Fatal Python error" not in done.stderr
