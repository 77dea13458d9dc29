"""An Artifact is a model at one point of the flow. Immutable; its id is its cache key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARTIFACT_META = "artifact.json"


def stable_hash(*parts: Any) -> str:
    """Hash of JSON-able parts; the same inputs give the same id on any machine."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of every file in a folder (names and contents, in name order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclass(frozen=True)
class Artifact:
    """A model file (or folder) with where it came from.

    `format` names its format plugin; `precision` fp32 / fp16 / int8; `lineage` names the steps
    that made it, first to last; `info` holds what its own step measured (losses, quantizer
    arguments); `attributes` hold what travels from a model to everything made from it (MACs,
    parameters, the input layout), so no step copies them by hand.
    """

    id: str
    name: str
    format: str
    precision: str
    path: Path
    sha256: str
    lineage: tuple[str, ...]
    parent: str | None = None
    info: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def size_bytes(self) -> int:
        return size_of(self.path)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = self.path.name
        data["lineage"] = list(self.lineage)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: Path) -> Artifact:
        return cls(**{**data, "path": folder / data["path"], "lineage": tuple(data["lineage"])})

    def derived_attributes(self, own: dict[str, Any]) -> dict[str, Any]:
        """The attributes of an artifact made from this one: these, updated by the step's own."""
        return {**self.attributes, **own}
