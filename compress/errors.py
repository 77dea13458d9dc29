"""Errors a user sees as one line: where (file, line, field) and what is wrong."""

from __future__ import annotations

from pathlib import Path


class CompressError(Exception):
    """A failure the user can act on. Printed as one line, never as a traceback."""

    exit_code = 1

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

    exit_code = 2


class StageError(CompressError):
    """A stage ran and failed (exit code 1)."""
