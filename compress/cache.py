"""Artifacts cached by id, written atomically: a folder is complete or it does not exist.

An artifact's id is its step's key: a hash of its parent's id, the step, its config and the versions
of the libraries the step uses, so `--resume` skips a step whose inputs are unchanged. A failing
step leaves nothing behind, and a cached artifact whose files no longer match the sha256 recorded
for them is not reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from compress.artifact import ARTIFACT_META, Artifact, sha256_of

log = logging.getLogger("compress.run")


def _remove(folder: Path) -> None:
    """Remove a folder a converter may still be writing into from a thread of its own (an interrupted
    TFLite conversion): until it stays gone, for a moment."""
    for _ in range(20):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.05)


class ArtifactCache:
    def __init__(self, root: Path, *, shared: bool = False) -> None:
        self.root = root
        self.shared = shared  # several runs at once (a sweep's trials): each key built under its lock

    def sweep(self) -> None:
        """Remove what a run that was killed outright (kill -9, a power cut) left half-written: the
        staging folders of keys no process is building now (runs of a sweep share one cache)."""
        if self.root.is_dir():
            for leftover in self.root.glob(".*"):
                if leftover.name == ".locks":
                    continue
                key = leftover.name[1:].split(".")[0]
                if not (self.root / ".locks" / f"{key}.lock").exists():
                    shutil.rmtree(leftover, ignore_errors=True)
                    continue
                with self.building(key, wait=False) as free:
                    if free:
                        shutil.rmtree(leftover, ignore_errors=True)

    @contextlib.contextmanager
    def building(self, artifact_id: str, *, wait: bool = True) -> Iterator[bool]:
        """Hold the key's lock (the kernel's flock: a process that dies holds nothing), so that of
        several runs that need the same artifact at once one builds it and the others reuse it.
        Yields False, without waiting, when `wait` is off and another process holds it."""
        import fcntl

        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{artifact_id}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lookup(self, artifact_id: str) -> Artifact | None:
        """The cached artifact, if there is one whose files still hash to what was recorded."""
        folder = self.root / artifact_id
        meta = folder / ARTIFACT_META
        if not meta.is_file():
            return None
        try:
            artifact = Artifact.from_json(json.loads(meta.read_text()), folder)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("cache entry %s is unreadable (%s): rebuilding it", artifact_id, exc)
            return None
        if not artifact.path.exists() or sha256_of(artifact.path) != artifact.sha256:
            log.warning("cache entry %s (%s): its files no longer match the sha256 recorded for them: rebuilding it",
                        artifact_id, artifact.name)
            return None
        return artifact

    def store(self, artifact_id: str, build: Callable[[Path], Artifact]) -> Artifact:
        """`build(folder)` writes the files into a private folder and returns the Artifact; the
        folder is renamed into place only when that succeeded."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging: Path | None = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{artifact_id}.", dir=self.root))
            artifact = build(staging)
            (staging / ARTIFACT_META).write_text(json.dumps(artifact.to_json(), indent=1, default=str))
            final = self.root / artifact_id
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
        except BaseException:
            if staging is not None:
                _remove(staging)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # a cache that holds nothing is no cache
            raise
        return Artifact.from_json(json.loads((final / ARTIFACT_META).read_text()), final)
