"""Errors a user sees as one line: where (file, line, field) and what is wrong; and the exit codes."""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path
from typing import NoReturn


class ExitCode(IntEnum):
    """What every command exits with (README, `compress --help`)."""

    OK = 0
    FAILED = 1  # a stage failed, an artifact failed its parity check, a gate failed
    BAD_INPUT = 2  # recipe, model, data, device or usage
    INCOMPLETE = 3  # a measurement crashed or timed out: never a pass


class CompressError(Exception):
    """A failure the user can act on. Printed as one line, never as a traceback."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self.one_line())

    def within(self, prefix: str) -> CompressError:
        """The same error with its field placed under `prefix` (e.g. a stage's own field under
        `stages[1]`)."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        return type(self)(self.message, file=self.file, line=self.line, field=field)

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class InputError(CompressError):
    """Bad input: recipe, model, data, device or command-line usage (exit code 2)."""

    exit_code = ExitCode.BAD_INPUT


class StageError(CompressError):
    """A stage ran and failed (exit code 1)."""


class ResourceError(CompressError):
    """The machine ran out of something: disk space (or the file size limit), or memory (exit code 1)."""


class InternalError(CompressError):
    """Something the tool did not expect: one line here, the traceback in a log file (exit code 1)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM: the run stops, cleans up, and exits 130 or 143."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"interrupted by signal {signal_number}")
        self.signal_number = signal_number


_DISK = ("no space left", "disk quota", "file too large", "basic_ios::clear", "iostream error")
_MEMORY = ("cannot allocate memory", "out of memory", "failed to allocate", "std::bad_alloc", "memoryerror")
# What libraries say when an allocation fails under an address-space limit (oneDNN, the dynamic loader)
_UNDER_A_LIMIT = ("could not create a primitive", "failed to map segment", "pthread_create failed")


def resource_error(exc: BaseException, where: str, folder: str | None = None) -> ResourceError | None:
    """The error as a ResourceError naming the step and the folder (or the limit), when it is the
    machine running out of disk or memory rather than the model or the tool failing; else None."""
    import errno
    import resource as limits

    text = f"{type(exc).__name__}: {exc}".lower()
    disk = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)) or any(
        word in text for word in _DISK)
    if disk:
        cap = limits.getrlimit(limits.RLIMIT_FSIZE)[0]
        limit = f" (the file size limit is {cap:,} bytes)" if cap != limits.RLIM_INFINITY else ""
        return ResourceError(f"no space left to write {folder or 'its files'} in {where}{limit}")
    cap = limits.getrlimit(limits.RLIMIT_AS)[0]
    limited = cap != limits.RLIM_INFINITY and any(word in text for word in _UNDER_A_LIMIT)
    if limited or isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM) or any(
            word in text for word in _MEMORY):
        limit = f" (the address-space limit is {cap // (1 << 20):,} MB)" if cap != limits.RLIM_INFINITY else ""
        return ResourceError(f"out of memory in {where}{limit}")
    return None


class ExportRefused(StageError):
    """A format cannot hold this model: recorded in results; the run goes on with other formats."""

    def __init__(self, message: str, *, field: str, fmt: str, op: str | None = None) -> None:
        super().__init__(message, field=field)
        self.format = fmt
        self.op = op

    def within(self, prefix: str) -> ExportRefused:
        return self


_OP = re.compile(r"\b(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)")
_CONVERTER_OP = re.compile(r"'((?:tfl|tosa|stablehlo|mhlo)\.[A-Za-z0-9_]+)' op")  # MLIR: "'tfl.one_hot' op ..."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unsupported_op(text: str) -> str | None:
    """The first operator a converter's error names: a torch one (e.g. 'aten.cummax.default'), or
    else the converter's own (e.g. 'tfl.one_hot'), if any."""
    clean = _ANSI.sub("", text)
    match = _OP.search(clean) or _CONVERTER_OP.search(clean)
    return match.group(1) if match else None


def first_line(exc: BaseException, limit: int = 300) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0][:limit] if text else ""


def refused(fmt: str, exc: BaseException, what: str, stage: str = "export") -> CompressError:
    """A converter's failure as a one-line refusal that names the operator when the error does (or a
    ResourceError, when the machine ran out of disk or memory: that is no refusal of the format)."""
    running_out = resource_error(exc, f"{stage}.{fmt}")
    if running_out is not None:
        return running_out
    op = unsupported_op(str(exc))
    message = f"{what} failed" + (f" on operator {op}" if op else "") + f": {type(exc).__name__}: {first_line(exc)}"
    return ExportRefused(message, field=f"{stage}.{fmt}", fmt=fmt, op=op)


def exit_with(exc: Exception) -> NoReturn:
    """End a command on an error: one line on stderr, the error's exit code (1 for anything else)."""
    import sys

    import click

    code = exc.exit_code if isinstance(exc, CompressError) else ExitCode.FAILED
    click.echo(f"error: {exc}", err=True)
    sys.exit(int(code))


def tool_failure(what: str, exc: BaseException, field: str = "quantize") -> CompressError:
    """A tool's failure (a quantizer, a converter) as one line: a ResourceError when the machine ran
    out of disk or memory, else a StageError that keeps the tool's own message."""
    return resource_error(exc, field) or StageError(f"{what} failed: {type(exc).__name__}: {first_line(exc)}",
                                                   field=field)
