"""Artifacts cached by id, written atomically: a folder is complete or it does not exist.

A stage's output id hashes its parent's id, the stage and its config, so `--resume` skips a stage
whose input and config are unchanged. A failing stage leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from compress.artifact import ARTIFACT_META, Artifact


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def lookup(self, artifact_id: str) -> Artifact | None:
        folder = self.root / artifact_id
        meta = folder / ARTIFACT_META
        if not meta.is_file():
            return None
        return Artifact.from_json(json.loads(meta.read_text()), folder)

    def store(self, artifact_id: str, build: Callable[[Path], Artifact]) -> Artifact:
        """`build(folder)` writes the files into a private folder and returns the Artifact; the
        folder is renamed into place only when that succeeded."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{artifact_id}.", dir=self.root))
        try:
            artifact = build(staging)
            final = self.root / artifact_id
            (staging / ARTIFACT_META).write_text(json.dumps(artifact.to_json(), indent=1, default=str))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Artifact.from_json(json.loads((final / ARTIFACT_META).read_text()), final)
