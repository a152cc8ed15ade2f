"""Where indexes live: a local (or mounted, shared) directory, or any pyarrow filesystem URI.

On one machine, and on a cluster whose nodes mount one shared path (NFS, EFS, Filestore), the
index root is a directory and `IndexDirectory` is used as is. On a cluster without a shared mount
the root is an object-store URI (`s3://bucket/indexes`, `gs://...`, `abfs://...`, `file:///...`):

    <uri>/<name>/CURRENT                 one small object, replaced by a single PUT (atomic on S3/GCS)
    <uri>/<name>/versions/<id>/...       uploaded completely *before* CURRENT names it

The index job builds each version in a local staging copy (FAISS wants files), uploads it, then
writes CURRENT. A reader on any node reads CURRENT and downloads that version once into a local
cache, so replicas on every node open the CURRENT version without sharing a disk.
pyarrow's filesystems are used rather than boto3/gcsfs so every store Ray Data reads works here too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import BeforeValidator

from core.config_file import ANCHORED
from indexes.layout import (
    CURRENT_FILE,
    PARTIAL_SUFFIX,
    IndexDirectory,
    IndexNotFoundError,
    validate_index_name,
    validate_version_id,
)
from indexes.manifest import MANIFEST_FILE

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("RAYRAG_INDEX_CACHE", Path.home() / ".cache" / "rayrag" / "indexes"))


def _fspath(value: object) -> object:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


# A directory path or a filesystem URI; kept a string so `s3://b/x` is not mangled into `s3:/b/x`.
IndexRoot = Annotated[str, BeforeValidator(_fspath), ANCHORED]


def is_uri(root: str | Path) -> bool:
    return "://" in str(root)


def join_uri(root: str, *parts: str) -> str:
    """`root`/parts for a path or a URI, keeping a URI's options (`?endpoint_override=...`) at the end."""
    head, _, options = str(root).partition("?")
    joined = "/".join([head.rstrip("/"), *parts])
    return f"{joined}?{options}" if options else joined


def write_text(location: str | Path, text: str) -> None:
    """Write a small file at a path or a URI (its folder made first)."""
    from pyarrow import fs

    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        Path(location).write_text(text)
        return
    filesystem, path = fs.FileSystem.from_uri(str(location))
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(text.encode())


def anchor(root: str | Path, base: Path) -> str:
    """A root every process can use: URIs unchanged, relative paths made absolute against `base`."""
    return str(root) if is_uri(root) else str((base / root).resolve())


class IndexLocation(Protocol):
    """What a reader needs of an index: the CURRENT version id and a local directory holding it."""

    name: str

    def current_version(self) -> str | None: ...

    def local_path(self, version: str) -> Path: ...

    def versions(self) -> list[str]: ...

    def describe(self) -> str: ...


@dataclass
class LocalLocation:
    """An index in a directory this node can read (local disk or a shared mount)."""

    root: Path
    name: str

    def current_version(self) -> str | None:
        return IndexDirectory(self.root, self.name).current_version()

    def local_path(self, version: str) -> Path:
        path = IndexDirectory(self.root, self.name).versions_path / version
        if not (path / MANIFEST_FILE).is_file():
            raise IndexNotFoundError(f"index {self.name!r} version {version} is not readable at {path}")
        return path

    def versions(self) -> list[str]:
        return IndexDirectory(self.root, self.name).versions()

    def describe(self) -> str:
        return str(Path(self.root) / self.name)


class RemoteIndexes:
    """The indexes under one filesystem URI: read CURRENT, download, upload, publish, prune."""

    def __init__(self, uri: str) -> None:
        from pyarrow import fs

        self.uri = uri
        self.display = uri.split("?")[0].rstrip("/")  # options (endpoints, keys) kept out of messages
        try:
            self.fs, self.base = fs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as exc:
            raise IndexNotFoundError(f"index root {self.display!r} cannot be opened: {exc}") from None
        self.base = self.base.rstrip("/")

    def _path(self, name: str, *parts: str) -> str:
        return "/".join([self.base, validate_index_name(name), *parts])

    def current_version(self, name: str) -> str | None:
        from pyarrow import fs

        pointer = self._path(name, CURRENT_FILE)
        if self.fs.get_file_info(pointer).type != fs.FileType.File:
            return None
        with self.fs.open_input_stream(pointer) as stream:
            text = stream.read(256).decode(errors="replace").strip()
        return validate_version_id(text, f"{self.display}/{name}/{CURRENT_FILE}") if text else None

    def versions(self, name: str) -> list[str]:
        """Complete versions (those holding a manifest), oldest first."""
        from pyarrow import fs

        root = self._path(name, "versions")
        if self.fs.get_file_info(root).type != fs.FileType.Directory:
            return []
        found = self.fs.get_file_info(fs.FileSelector(root, recursive=True))
        return sorted({Path(i.path).parent.name for i in found if Path(i.path).name == MANIFEST_FILE})

    def has_manifest(self, name: str, version: str) -> bool:
        from pyarrow import fs

        return self.fs.get_file_info(self._path(name, "versions", version, MANIFEST_FILE)).type == fs.FileType.File

    def download(self, name: str, version: str, target: Path) -> Path:
        """Copy one version into `target` (written beside it, renamed into place when complete)."""
        from pyarrow import fs

        if (target / MANIFEST_FILE).is_file():
            return target
        source = self._path(name, "versions", version)
        if not self.has_manifest(name, version):
            raise IndexNotFoundError(f"index {name!r} version {version} is missing under {self.display}")
        staging = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}")
        _remove_stale_downloads(target)
        staging.mkdir(parents=True)
        try:
            fs.copy_files(source, str(staging), source_filesystem=self.fs, destination_filesystem=fs.LocalFileSystem())
        except BaseException:  # a failed download leaves nothing behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.replace(staging, target)
        except OSError:  # another replica on this node finished the same download first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def upload(self, name: str, version: str, source: Path) -> None:
        """Copy a finished local version up; CURRENT is untouched, so readers never see half of it."""
        from pyarrow import fs

        target = self._path(name, "versions", version)
        files = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: (p.name == MANIFEST_FILE, p))
        for path in files:  # the manifest last: a version that has one is complete (see `versions`)
            destination = f"{target}/{path.relative_to(source).as_posix()}"
            self.fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
            fs.copy_files(
                str(path), destination, source_filesystem=fs.LocalFileSystem(), destination_filesystem=self.fs
            )

    def publish(self, name: str, version: str) -> None:
        """Point CURRENT at an uploaded version: one whole-object write, atomic on object stores."""
        with self.fs.open_output_stream(self._path(name, CURRENT_FILE)) as stream:
            stream.write(f"{version}\n".encode())

    def names(self) -> list[str]:
        """The indexes under this root that have a CURRENT (valid names only), sorted."""
        from pyarrow import fs

        found = self.fs.get_file_info(fs.FileSelector(self.base, allow_not_found=True))
        names = [Path(i.path).name for i in found if i.type == fs.FileType.Directory]
        return sorted(n for n in names if _valid_name(n) and self.current_version(n) is not None)

    def drop(self, name: str, *parts: str) -> None:
        """Remove the index (or `parts` of it): CURRENT first, so readers see no index, never half of one."""
        from pyarrow import fs

        if self.fs.get_file_info(self._path(name, CURRENT_FILE)).type == fs.FileType.File:
            self.fs.delete_file(self._path(name, CURRENT_FILE))
        if self.fs.get_file_info(self._path(name, *parts)).type == fs.FileType.Directory:
            self.fs.delete_dir(self._path(name, *parts))

    def prune(self, name: str, keep: int) -> list[str]:
        current = self.current_version(name)
        doomed = [v for v in self.versions(name)[:-keep] if v != current]
        for version in doomed:
            self.fs.delete_dir(self._path(name, "versions", version))
        return doomed


@dataclass
class RemoteLocation:
    """An index under a URI, read through a per-node cache of downloaded versions."""

    remote: RemoteIndexes
    name: str
    cache: Path

    def current_version(self) -> str | None:
        return self.remote.current_version(self.name)

    def local_path(self, version: str) -> Path:
        return self.remote.download(self.name, version, self.cache / self.name / version)

    def versions(self) -> list[str]:
        return self.remote.versions(self.name)

    def describe(self) -> str:
        return f"{self.remote.display}/{self.name}"


STALE_DOWNLOAD_S = 3600  # a download this old is a leftover of a killed process, not one in progress


def _remove_stale_downloads(target: Path) -> None:
    """Remove half-done downloads of `target` that a killed process left beside it."""
    if not target.parent.exists():
        return
    for leftover in target.parent.glob(f"{target.name}.*{PARTIAL_SUFFIX}"):
        if time.time() - leftover.stat().st_mtime > STALE_DOWNLOAD_S:
            shutil.rmtree(leftover, ignore_errors=True)


def mirror_current(remote: RemoteIndexes, directory: IndexDirectory) -> str | None:
    """Make the local staging copy's CURRENT the remote CURRENT, so the job increments on it."""
    version = remote.current_version(directory.name)
    if version is not None and directory.current_version() != version:
        remote.download(directory.name, version, directory.versions_path / version)
        directory.point_current(version)
    return version


def push_version(remote: RemoteIndexes, directory: IndexDirectory, version: str, keep: int) -> None:
    """Upload a version the job published locally, then flip the remote CURRENT and prune."""
    remote.upload(directory.name, version, directory.versions_path / version)
    remote.publish(directory.name, version)
    remote.prune(directory.name, keep)


def locate(root: str | Path, name: str, cache: Path | None = None) -> IndexLocation:
    """The reader's view of index `name` under `root` (a path or a URI)."""
    if is_uri(root):
        return RemoteLocation(RemoteIndexes(str(root)), name, Path(cache or DEFAULT_CACHE))
    return LocalLocation(Path(root), name)


def index_names(root: str | Path) -> list[str]:
    """The published indexes under `root` (a path or a URI): what a discovering retriever serves."""
    if is_uri(root):
        return RemoteIndexes(str(root)).names()
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if _valid_name(p.name) and (p / CURRENT_FILE).is_file())


def _valid_name(name: str) -> bool:
    try:
        validate_index_name(name)
        return True
    except ValueError:
        return False


def check_readable(root: str | Path, name: str) -> str:
    """The CURRENT version of `name` if its manifest can be read from here; raises otherwise.

    Used at deploy time on every node that may host a retriever, so a root one node cannot read
    fails the deploy instead of that node's first query.
    """
    location = locate(root, name)
    version = location.current_version()
    if version is None:
        raise IndexNotFoundError(f"index {name!r} has no published version at {location.describe()}")
    if isinstance(location, RemoteLocation):
        if not location.remote.has_manifest(name, version):
            raise IndexNotFoundError(f"index {name!r} version {version} has no manifest at {location.describe()}")
        return version
    location.local_path(version)
    return version
