"""Uploaded files and each index's source area, in a directory or under a URI (pyarrow filesystems,
as the index job reads them), so one layout serves a single machine and an `s3://` cluster:

    files/<tenant>/<file_id>/meta.json    the file object (OpenAI's shape) and its owner
    files/<tenant>/<file_id>/data         the bytes as uploaded
    sources/<index>/<file_id>/<filename>  what `rayrag index` reads for that index
    jobs/<job_id>.json                    an index job's report, written by the job itself
    stores/<index>                        an index a vector store created (and may drop)

Nothing a client sends becomes a path: file ids are made here (`file-` + 24 hex), a tenant's
folder is a digest of its name, an index name is checked as the index layout checks it, and a
filename keeps only its last part with anything but letters, digits, `.`, `-` and `_` replaced.
Deleting a file also takes it out of every index's source area, so the next job drops its chunks.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs
from pydantic import BaseModel

from indexes.layout import validate_index_name
from indexes.storage import is_uri, join_uri
from serving.errors import NotFound

FILE_ID = r"^file-[0-9a-f]{24}$"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FileObject(BaseModel):
    """OpenAI's file object (`client.files.create` returns it)."""

    id: str
    object: str = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"


def file_of(source: str) -> tuple[str, str]:
    """(file id, filename) of a source key `<file_id>/<filename>`; an index's own documents (not
    uploads) have no file id."""
    *_, folder, name = ["", *source.split("/")]
    return (folder if re.match(FILE_ID, folder) else ""), name


def safe_filename(name: str) -> str:
    """The last part of an uploaded name, reduced to safe characters (never empty, never hidden)."""
    last = PurePosixPath(name.replace("\\", "/")).name
    cleaned = _UNSAFE.sub("_", last).lstrip(".")[:128]
    return cleaned or "upload"


class FileStore:
    def __init__(self, root: str) -> None:
        if is_uri(root):
            self.fs, self.base = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.base = pafs.LocalFileSystem(), str(PurePosixPath(_absolute(root)))
        self.root = root

    # -- paths -------------------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts])

    @staticmethod
    def _tenant(tenant: str) -> str:
        return hashlib.sha256(tenant.encode()).hexdigest()[:16]

    def source(self, index: str) -> str:
        """Where the index job reads `index`'s documents: a path, or a URI on an object store."""
        parts = ("sources", validate_index_name(index))
        return join_uri(self.root, *parts) if is_uri(self.root) else self._path(*parts)

    def report_location(self, job_id: str) -> str:
        """Where the job writes its report (`rayrag index --report-out`)."""
        parts = ("jobs", f"{job_id}.json")
        return join_uri(self.root, *parts) if is_uri(self.root) else self._path(*parts)

    # -- files ---------------------------------------------------------------------------------------

    def save(self, tenant: str, filename: str, data: bytes, purpose: str) -> FileObject:
        file = FileObject(
            id=f"file-{uuid.uuid4().hex[:24]}", bytes=len(data), created_at=int(time.time()),
            filename=safe_filename(filename), purpose=purpose,
        )  # fmt: skip
        folder = self._path("files", self._tenant(tenant), file.id)
        self.fs.create_dir(folder, recursive=True)
        self._write(f"{folder}/data", data)
        self._write(f"{folder}/meta.json", file.model_dump_json().encode())
        return file

    def get(self, tenant: str, file_id: str) -> FileObject:
        """The tenant's file; another tenant's id and an unknown one are the same 404."""
        meta = self._path("files", self._tenant(tenant), file_id, "meta.json")
        if not re.match(FILE_ID, file_id) or self.fs.get_file_info(meta).type != pafs.FileType.File:
            raise NotFound(f"no file {file_id!r}", param="file_id")
        return FileObject.model_validate_json(self._read(meta))

    def list(self, tenant: str) -> list[FileObject]:
        folder = self._path("files", self._tenant(tenant))
        found = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = [
            self.get(tenant, PurePosixPath(info.path).name) for info in found if info.type == pafs.FileType.Directory
        ]
        return sorted(files, key=lambda f: (f.created_at, f.id))

    def bytes_used(self, tenant: str) -> tuple[int, int]:
        """Stored bytes and files of one tenant (what the upload quota counts: a tenant's keys share its files)."""
        files = self.list(tenant)
        return sum(f.bytes for f in files), len(files)

    def delete(self, tenant: str, file_id: str) -> FileObject:
        file = self.get(tenant, file_id)
        for index in self._indexes():
            self.detach(index, file_id)
        self.fs.delete_dir(self._path("files", self._tenant(tenant), file_id))
        return file

    # -- an index's source area ------------------------------------------------------------------

    def attach(self, tenant: str, index: str, file_id: str) -> FileObject:
        file = self.get(tenant, file_id)
        folder = f"{self._path('sources', validate_index_name(index), file_id)}"
        self.fs.create_dir(folder, recursive=True)
        self.fs.copy_file(self._path("files", self._tenant(tenant), file_id, "data"), f"{folder}/{file.filename}")
        return file

    def detach(self, index: str, file_id: str) -> bool:
        folder = self._path("sources", validate_index_name(index), file_id)
        if not re.match(FILE_ID, file_id) or self.fs.get_file_info(folder).type != pafs.FileType.Directory:
            return False
        self.fs.delete_dir(folder)
        return True

    def attached(self, index: str) -> dict[str, str]:
        """File id -> its source key (`<file_id>/<filename>`, what the job report names)."""
        folder = self._path("sources", validate_index_name(index))
        found = self.fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        keys = [info.path[len(folder) + 1 :] for info in found if info.type == pafs.FileType.File]
        return {key.split("/", 1)[0]: key for key in keys}

    def _indexes(self) -> list[str]:
        found = self.fs.get_file_info(pafs.FileSelector(self._path("sources"), allow_not_found=True))
        return [PurePosixPath(info.path).name for info in found if info.type == pafs.FileType.Directory]

    # -- indexes created over HTTP ---------------------------------------------------------------

    def created(self) -> list[str]:
        """Indexes a vector store created (`stores/<index>`), served or still waiting for a version."""
        found = self.fs.get_file_info(pafs.FileSelector(self._path("stores"), allow_not_found=True))
        return sorted(PurePosixPath(i.path).name for i in found if i.type == pafs.FileType.File)

    def mark_created(self, index: str, created: bool) -> None:
        path = self._path("stores", validate_index_name(index))
        if created:
            self.fs.create_dir(self._path("stores"), recursive=True)
            self._write(path, b"")
        elif self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    # -- job reports and an index's job state ---------------------------------------------------

    def note(self, index: str, name: str, value: str | None) -> None:
        """A small per-index marker under jobs/ (`latest`: the last job's id; `pending`: files wait for a job)."""
        path = self._path("jobs", f"{validate_index_name(index)}.{name}")
        if value is None:
            if self.fs.get_file_info(path).type == pafs.FileType.File:
                self.fs.delete_file(path)
            return
        self.fs.create_dir(self._path("jobs"), recursive=True)
        self._write(path, value.encode())

    def noted(self, index: str, name: str) -> str | None:
        path = self._path("jobs", f"{validate_index_name(index)}.{name}")
        return self._read(path).decode() if self.fs.get_file_info(path).type == pafs.FileType.File else None

    def report(self, job_id: str) -> dict | None:
        path = self._path("jobs", f"{job_id}.json")
        return json.loads(self._read(path)) if self.fs.get_file_info(path).type == pafs.FileType.File else None

    def _write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()


def _absolute(root: str) -> str:
    return str(Path(root).resolve())
