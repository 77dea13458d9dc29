"""Turns a pydantic ValidationError into one short sentence with the field path."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _unwrap(annotation: Any) -> list[Any]:
    """The classes a field annotation may hold (Optional, list, dict, Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict, tuple):
        found: list[Any] = []
        for arg in typing.get_args(annotation):
            found.extend(_unwrap(arg))
        return found
    return [annotation]


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """Walk field annotations to find the model class that owns the last key of `loc`."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        info = current.model_fields.get(part)
        if info is None:
            return None
        candidates = [c for c in _unwrap(info.annotation)
                      if isinstance(c, type) and issubclass(c, BaseModel)]
        current = candidates[0] if candidates else None
    return current


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def first_error_message(exc: ValidationError, model: type[BaseModel]) -> tuple[tuple[str | int, ...], str]:
    """(field path, message) for the first error, worded for a person editing YAML."""
    errors = exc.errors()
    # A misspelt key also makes the right key "missing": the unknown key is the better clue.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        key = str(loc[-1])
        message = f"unknown key {key!r}"
        if owner is not None:
            close = difflib.get_close_matches(key, list(owner.model_fields), n=1, cutoff=0.5)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            else:
                message += f" (valid keys: {', '.join(owner.model_fields)})"
        return loc, message
    if kind == "missing":
        return loc, "required key is missing"
    if kind in _BOUNDS:
        bound = next(iter(context.values()))
        return loc, f"must be {_BOUNDS[kind]} {bound} (got {_short(error['input'])})"
    if kind == "value_error":
        return loc, str(context.get("error", error["msg"]))
    message = error["msg"].replace("Input should be", "must be").replace("Value error, ", "")
    return loc, f"{message[0].lower()}{message[1:]} (got {_short(error['input'])})"
