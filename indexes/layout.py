"""One index on disk: `versions/<id>/`, a `CURRENT` pointer and a writer lock.

    <root>/<name>/
        CURRENT                 the version id serving opens; replaced atomically (os.replace)
        .lock                   held by the one job writing this index
        versions/<id>/          complete versions: manifest.json, chunks.sqlite, vectors/, report.json
        versions/<id>.partial/  a version being written; never opened, removed by the next job

A job killed half-way leaves only a `.partial` directory: CURRENT still names the previous good
version, and the next job deletes the leftover and builds the version again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from indexes.backends import open_vector_index
from indexes.errors import IndexLockedError, IndexNotFoundError, TamperedIndexError
from indexes.manifest import Manifest

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
PARTIAL_SUFFIX = ".partial"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# what begin_version makes: UTC time to the microsecond, then 6 hex digits
_VERSION = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{6}$")


def validate_version_id(version: str, where: str) -> str:
    """CURRENT's text becomes a path: only a version id an index job makes may (no `../`, no `/`)."""
    if not _VERSION.match(version):
        raise TamperedIndexError(f"{where} names {version[:80]!r}, which is not a version id this platform writes")
    return version


def validate_index_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"index name {name!r} must be 1-64 letters, digits, '_', '-' or '.', starting alphanumeric")
    return name


class IndexDirectory:
    """Versions, CURRENT pointer and lock of one named index."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = validate_index_name(name)
        self.path = Path(root) / name
        self.versions_path = self.path / "versions"

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Fail fast when another job writes this index: two writers would race on CURRENT."""
        self.versions_path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise IndexLockedError(
                f"index {self.name!r} is being written by another job (lock {self.path / '.lock'}); "
                "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def current_version(self) -> str | None:
        pointer = self.path / CURRENT_FILE
        return validate_version_id(pointer.read_text().strip(), str(pointer)) if pointer.exists() else None

    def current_path(self) -> Path:
        version = self.current_version()
        if version is None:
            raise IndexNotFoundError(f"index {self.name!r} has no version under {self.path}: run `rayrag index`")
        return self.versions_path / version

    def current_manifest(self) -> Manifest | None:
        version = self.current_version()
        return Manifest.load(self.versions_path / version) if version else None

    def versions(self) -> list[str]:
        """Complete versions, oldest first (ids sort by creation time)."""
        if not self.versions_path.exists():
            return []
        return sorted(
            p.name for p in self.versions_path.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX)
        )

    def begin_version(self) -> tuple[str, Path]:
        """A fresh version id and the `.partial` directory to build it in."""
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]
        partial = self.versions_path / f"{version}{PARTIAL_SUFFIX}"
        partial.mkdir(parents=True)
        return version, partial

    def publish(self, version: str, partial: Path) -> Path:
        """Make a finished version visible: rename it into place, then flip CURRENT atomically."""
        final = self.versions_path / version
        os.replace(partial, final)
        self.point_current(version)
        return final

    def point_current(self, version: str) -> None:
        """Flip CURRENT to `version` with one rename: readers see the old id or the new, never half."""
        validate_version_id(version, f"the new CURRENT of {self.name!r}")
        tmp = self.path / f"{CURRENT_FILE}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as handle:
            handle.write(version + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / CURRENT_FILE)

    def remove_partials(self) -> list[str]:
        """Delete versions a killed job left half-written; returns their names."""
        removed = []
        for leftover in self.versions_path.glob(f"*{PARTIAL_SUFFIX}"):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover.name)
        return removed

    def drop(self, qdrant=None) -> list[str]:
        """Remove the whole index under its writer lock: CURRENT first (readers then see no index,
        never half of one), then every version (and its Qdrant collection); returns their ids."""
        if not self.path.exists():
            return []
        with self.writer_lock():
            (self.path / CURRENT_FILE).unlink(missing_ok=True)
            dropped = self.versions()
            for version in dropped:
                _drop_version(self.versions_path / version, qdrant)
            self.remove_partials()
        shutil.rmtree(self.path, ignore_errors=True)
        return dropped

    def prune(self, keep: int, qdrant=None) -> list[str]:
        """Keep the newest `keep` versions (and always CURRENT); returns the ids removed. `qdrant` is the
        config's Qdrant server, whose old collections are dropped too."""
        current = self.current_version()
        doomed = [v for v in self.versions()[:-keep] if v != current]
        for version in doomed:
            _drop_version(self.versions_path / version, qdrant)
        return doomed


def _drop_version(path: Path, qdrant=None) -> None:
    vectors = path / "vectors"
    if vectors.exists():
        try:
            open_vector_index(vectors, qdrant).drop()  # a server collection is not under `path`
        except Exception as exc:  # noqa: BLE001 - a broken old version must not stop pruning the rest
            log.warning("could not drop the vectors of old version %s: %s", path.name, exc)
    shutil.rmtree(path, ignore_errors=True)
