"""Exporters: a torch model to one deployment format, in fp32."""

from __future__ import annotations

import re

from compress.errors import StageError

_OP = re.compile(r"\b(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)")
_CONVERTER_OP = re.compile(r"'((?:tfl|tosa|stablehlo|mhlo)\.[A-Za-z0-9_]+)' op")  # MLIR: "'tfl.one_hot' op ..."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def unsupported_op(text: str) -> str | None:
    """The first operator a converter's error names: a torch one (e.g. 'aten.cummax.default'), or
    else the converter's own (e.g. 'tfl.one_hot'), if any."""
    clean = _ANSI.sub("", text)
    match = _OP.search(clean) or _CONVERTER_OP.search(clean)
    return match.group(1) if match else None


def refused(fmt: str, exc: BaseException, what: str) -> ExportRefused:
    """A converter's failure as a one-line refusal that names the operator when the error does."""
    text = _ANSI.sub("", str(exc)).strip()
    first = text.splitlines()[0][:300] if text else ""
    op = unsupported_op(text)
    message = f"{what} failed" + (f" on operator {op}" if op else "") + f": {type(exc).__name__}: {first}"
    return ExportRefused(message, field=f"export.{fmt}", fmt=fmt, op=op)


class ExportRefused(StageError):
    """A format cannot hold this model: recorded in results; the run goes on with other formats."""

    def __init__(self, message: str, *, field: str, fmt: str, op: str | None = None) -> None:
        super().__init__(message, field=field)
        self.format = fmt
        self.op = op
