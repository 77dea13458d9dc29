"""Hostile and broken inputs: every case checks the exit code, that stderr is one line with no
traceback, that nothing was written outside the output folder, and that no process is left."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from compress.cli import main

SMALL: dict[str, Any] = {
    "schema_version": 1, "name": "hostile", "seed": 0,
    "model": {"factory": "compress.zoo.digits:DigitsCNN", "kwargs": {"width": 4},
              "input": {"name": "input", "shape": [1, 1, 8, 8]}, "train": {"epochs": 1, "lr": 0.01}},
    "data": {"source": "digits"},
    "stages": [],
    "export": ["onnx"],
    "verify": {"runtimes": ["onnxruntime"], "latency": {"warmup": 0, "min_runs": 1, "min_seconds": 0}},
}


def recipe(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SMALL)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def one_line_error(self) -> str:
        """The single error line; fails the test if stderr is anything else."""
        lines = [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
        assert "Traceback" not in self.stderr, self.stderr
        assert len(lines) <= 1 or not any(line.startswith("error: ") for line in lines[:-1]), self.stderr
        assert lines and lines[-1].startswith("error: "), self.stderr
        return lines[-1]


def _files(folder: Path, skip: Path | None) -> set[Path]:
    return {p for p in folder.rglob("*") if skip is None or not p.is_relative_to(skip)}


class Sandbox:
    """A folder for one case: its recipe and inputs, an output folder, and a private TMPDIR; after
    the case, nothing outside the output folder has changed and no temporary folder is left."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "runs"
        self.tmp = root.parent / f"{root.name}-tmp"
        self.tmp.mkdir()

    def write(self, name: str, content: str | bytes | dict) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            content = yaml.safe_dump(content, sort_keys=False)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def cli(self, *args: Any) -> Outcome:
        """`compress ARGS` in this process (fast); an uncaught exception fails the test."""
        before = _files(self.root, self.out)
        runner = CliRunner()
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(self.tmp)
        import tempfile

        tempfile.tempdir = None
        try:
            result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        finally:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved
            tempfile.tempdir = None
        assert "internal error" not in result.stderr, result.stderr  # every hostile input is a known error
        self.check_untouched(before)
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def process(self, *args: Any, timeout: float = 240, env: dict[str, str] | None = None,
                preexec: Any = None) -> Outcome:
        """`compress ARGS` in a fresh process (for limits, signals and processes)."""
        before = _files(self.root, self.out)
        done = subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], cwd=self.root,
                              capture_output=True, text=True, timeout=timeout, preexec_fn=preexec,
                              env={**os.environ, "TMPDIR": str(self.tmp), "COLUMNS": "200", **(env or {})})
        self.check_untouched(before)
        no_process_left(self.root)
        return Outcome(done.returncode, done.stdout, done.stderr)

    def check_untouched(self, before: set[Path]) -> None:
        after = _files(self.root, self.out)
        assert after == before, f"written outside the output folder: {sorted(map(str, after ^ before))}"
        left = leftovers(self.tmp)
        for path in left:  # one case's leftovers must not fail the next (hypothesis reuses the sandbox)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        assert not left, f"temporary files left: {left}"


def leftovers(tmp: Path) -> list[Path]:
    """What a run left in TMPDIR, but the libraries' own caches kept on purpose across processes:
    onnxruntime's session id file (.ses) and torch's compile cache (torchinductor_<user>)."""
    return [p for p in tmp.iterdir() if p.name != ".ses" and not p.name.startswith("torchinductor_")]


def no_process_left(marker: Path) -> None:
    """No process whose command line or working directory names `marker` is alive."""
    mine = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and (str(marker) in cmdline or cwd.startswith(str(marker))):
            os.kill(int(entry.name), signal.SIGKILL)
            raise AssertionError(f"process {entry.name} survived: {cmdline}")


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    root = tmp_path / "case"
    root.mkdir()
    return Sandbox(root)


def minimal_results() -> str:
    """A valid, empty results.json."""
    from compress.results import Results

    return Results(compress_version="0", run_id="r", recipe="r.yaml", recipe_name="r", started="", finished="",
                   status="complete", task={"metric": "top1"}, data={}, stages=[], artifacts=[], measurements=[],
                   versions={}).model_dump_json()
