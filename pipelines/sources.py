"""List the files of a source: a local directory or glob, or a URI (`s3://`, `gs://`, `file://`).

Everything goes through pyarrow filesystems, so the same job reads object storage on a cluster
that has credentials. Listing applies the cheap filters (extension, size cap) before any file is
read; what they refuse is reported, not silently dropped.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pyarrow.fs as pafs

from pipelines.config import SourceConfig

_GLOB_CHARS = set("*?[")


class SourceError(ValueError):
    """The source itself is unusable (missing, empty); single bad files are not this."""


@dataclass(frozen=True)
class SourceFile:
    key: str  # path relative to the source root: the document's identity in the manifest
    path: str  # path inside `filesystem`
    size: int


@dataclass(frozen=True)
class FileIssue:
    path: str
    reason: str


@dataclass
class Listing:
    filesystem: pafs.FileSystem
    root: str
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[FileIssue] = field(default_factory=list)


def split_source(source: str) -> tuple[str | None, str, str | None]:
    """(scheme, base, pattern): `s3://b/docs/**/*.pdf` -> ('s3', 'b/docs', '**/*.pdf')."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        scheme, rest = None, source
    parts = PurePosixPath(rest).parts
    glob_at = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), None)
    if glob_at is None:
        return scheme, rest, None
    base = str(PurePosixPath(*parts[:glob_at])) if glob_at else "."
    return scheme, base, str(PurePosixPath(*parts[glob_at:]))


def filesystem_for(source: str) -> tuple[pafs.FileSystem, str, str | None]:
    """The pyarrow filesystem, the base path inside it and the glob pattern (if any). A URI's
    options (`s3://b/docs?endpoint_override=host:port`) configure the filesystem; their `?` is not
    a glob."""
    options = ""
    if "://" in source and "?" in source:
        source, options = source.split("?", 1)
    scheme, base, pattern = split_source(source)
    if scheme is None:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(base)), pattern
    filesystem, path = pafs.FileSystem.from_uri(f"{scheme}://{base}" + (f"?{options}" if options else ""))
    return filesystem, path, pattern


def matches(key: str, pattern: str | None) -> bool:
    """Glob match on a relative key; `**/` also matches files at the top level."""
    if pattern is None:
        return True
    return fnmatch.fnmatch(key, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(key, pattern[3:]))


def list_source(source: str, config: SourceConfig) -> Listing:
    filesystem, base, pattern = filesystem_for(source)
    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"source {source!r} does not exist")
    if info.type == pafs.FileType.File:
        base, infos = str(PurePosixPath(base).parent), [info]
    else:
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    listing = Listing(filesystem, base)
    for entry in sorted(infos, key=lambda e: e.path):
        if entry.type != pafs.FileType.File:  # directories; sockets and FIFOs would block a reader
            continue
        key = PurePosixPath(entry.path).relative_to(base).as_posix()
        if matches(key, pattern) and not any(fnmatch.fnmatch(key, ex) for ex in config.exclude):
            _admit(listing, entry, key, config)
    if not listing.files and not listing.skipped:
        raise SourceError(f"source {source!r} has no files" + (f" matching {pattern!r}" if pattern else ""))
    return listing


def _admit(listing: Listing, entry: pafs.FileInfo, key: str, config: SourceConfig) -> None:
    suffix = PurePosixPath(key).suffix.lower()
    size = entry.size if entry.size is not None else 0
    if suffix not in config.extensions:
        listing.skipped.append(FileIssue(key, f"unsupported extension {suffix or '(none)'!r}"))
    elif size > config.max_file_bytes:
        listing.skipped.append(
            FileIssue(key, f"{size} bytes is over the {config.max_file_bytes}-byte cap (source.max_file_bytes)")
        )
    else:
        listing.files.append(SourceFile(key, entry.path, size))
