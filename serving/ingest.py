"""Documents in over HTTP: uploads (`/v1/files`), an index's documents, and its jobs (issue 21).

An upload is stored as the tenant's file (serving/stores/files.py); attaching it to an index copies
it into that index's source area; a job is `rayrag index` on that area, submitted through Ray's
job API (the same command the CLI runs, on the cluster, not a second pipeline), incremental by
content hash like every run: a detached or deleted file's chunks are gone from the next version.
The retriever's hot reload serves the new version once it is published. Writes need the key's
`ingest` scope for the index; uploads count against the tenant's byte and file quota; one job per
index at a time (a second gets 409 naming the running one).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from indexes.config import IndexesConfig
from indexes.layout import validate_index_name
from serving.checks.auth import Forbidden
from serving.config import IngestConfig
from serving.errors import InvalidRequest, NotFound, ServingError
from serving.stores.files import FileObject, FileStore, file_of
from serving.stores.keys import Principal

ACTIVE = {"PENDING", "RUNNING"}
STATUS = {"PENDING": "queued", "RUNNING": "in_progress", "SUCCEEDED": "completed", "FAILED": "failed",
          "STOPPED": "cancelled"}  # fmt: skip


class Conflict(ServingError):
    status, type, code = 409, "invalid_request_error", "job_running"


class UploadQuotaExceeded(ServingError):
    status, type, code = 429, "insufficient_quota", "upload_quota_exceeded"


class IndexJob(BaseModel):
    """An index job as the API shows it: Ray's state, and the job report once the job wrote it."""

    id: str
    object: str = "index.job"
    index: str
    status: str  # queued | in_progress | completed | failed | cancelled
    version: str | None = None
    documents: dict[str, int] | None = None  # listed, parsed, unchanged, skipped, deleted
    chunks: dict[str, int] | None = None  # added, removed, total
    bad_files: list[dict[str, str]] = []  # {file_id, filename, reason}: files the job refused, by name
    message: str | None = None


class Jobs(Protocol):
    """Ray's job API as the ingest service needs it (a fake in the unit tier)."""

    def submit(self, job_id: str, entrypoint: str, metadata: dict[str, str]) -> None: ...
    def status(self, job_id: str) -> tuple[str, str | None, dict[str, str]] | None: ...  # (state, message, metadata)
    def active(self, metadata: dict[str, str]) -> str | None: ...  # a running job's id with this metadata


class RayJobs:
    """`ray.job_submission.JobSubmissionClient` at `address` (auto: the cluster this replica is in)."""

    def __init__(self, address: str) -> None:
        self.address, self._client = address, None

    def _jobs(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def submit(self, job_id: str, entrypoint: str, metadata: dict[str, str]) -> None:
        self._jobs().submit_job(entrypoint=entrypoint, submission_id=job_id, metadata=metadata)

    def status(self, job_id: str) -> tuple[str, str | None, dict[str, str]] | None:
        try:
            info = self._jobs().get_job_info(job_id)
        except RuntimeError:  # the job API's "does not exist"
            return None
        return (
            str(info.status.value if hasattr(info.status, "value") else info.status),
            info.message,
            info.metadata or {},
        )

    def active(self, metadata: dict[str, str]) -> str | None:
        for job in self._jobs().list_jobs():
            state = str(job.status.value if hasattr(job.status, "value") else job.status)
            if state in ACTIVE and metadata.items() <= (job.metadata or {}).items():
                return job.submission_id
        return None


class Ingest:
    """The ingest routes' service: scope and quota checks, files, an index's documents, its jobs."""

    def __init__(self, config: IngestConfig, indexes: IndexesConfig, jobs: Jobs | None = None) -> None:
        self.config, self.indexes = config, indexes
        self.files = FileStore(config.root)
        self.jobs = jobs or RayJobs(config.jobs_address)

    def _enabled(self) -> None:
        if not self.config.enabled:
            raise NotFound("documents over HTTP are off: set serve.gateway.ingest.enabled")

    def may_write(self, who: Principal, index: str) -> str:
        self._enabled()
        try:
            validate_index_name(index)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="index") from None
        if not who.may_ingest(index):
            raise Forbidden(f"this key may not add documents to index {index!r}", param="index")
        return index

    # -- files -------------------------------------------------------------------------------------

    async def upload(self, who: Principal, filename: str, data: bytes, purpose: str) -> FileObject:
        self._enabled()
        if not who.ingest:
            raise Forbidden("this key may not upload documents (no ingest scope)")
        used, count = await asyncio.to_thread(self.files.bytes_used, who.tenant)
        if used + len(data) > self.config.max_bytes_per_tenant or count >= self.config.max_files_per_tenant:
            raise UploadQuotaExceeded(
                f"uploads of this tenant would hold {used + len(data)} bytes in {count + 1} files; the limits are "
                f"{self.config.max_bytes_per_tenant} bytes and {self.config.max_files_per_tenant} files: delete some first"
            )  # fmt: skip
        return await asyncio.to_thread(self.files.save, who.tenant, filename, data, purpose)

    async def file(self, who: Principal, file_id: str) -> FileObject:
        self._enabled()
        return await asyncio.to_thread(self.files.get, who.tenant, file_id)

    async def list_files(self, who: Principal) -> list[FileObject]:
        self._enabled()
        return await asyncio.to_thread(self.files.list, who.tenant)

    async def delete(self, who: Principal, file_id: str) -> FileObject:
        self._enabled()
        return await asyncio.to_thread(self.files.delete, who.tenant, file_id)

    # -- an index's documents and jobs -----------------------------------------------------------

    async def attached(self, index: str) -> dict[str, str]:
        return await asyncio.to_thread(self.files.attached, index)

    async def attach(self, who: Principal, index: str, file_id: str) -> FileObject:
        return await asyncio.to_thread(self.files.attach, who.tenant, self.may_write(who, index), file_id)

    async def detach(self, who: Principal, index: str, file_id: str) -> bool:
        if not await asyncio.to_thread(self.files.detach, self.may_write(who, index), file_id):
            raise NotFound(f"file {file_id!r} is not in index {index!r}", param="file_id")
        return True

    async def start(self, who: Principal, index: str) -> IndexJob:
        """Submit `rayrag index` on the index's source area; 409 while another job of it runs."""
        job = await self._submit(who, index, "ingest", lambda job_id: self.entrypoint(index, job_id))
        await asyncio.to_thread(self.files.note, index, "latest", job.id)
        return job

    async def _submit(self, who: Principal, index: str, kind: str, command: Callable[[str], str]) -> IndexJob:
        """One job of an index at a time: 409 naming the running one, else submit `command(job_id)`."""
        self.may_write(who, index)
        running = await asyncio.to_thread(self.jobs.active, _metadata(index))
        if running is not None:
            raise Conflict(f"index {index!r} already has a job running: {running}", param="index")
        job_id = f"{kind}-{index}-{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(self.jobs.submit, job_id, command(job_id), _metadata(index))
        return IndexJob(id=job_id, index=index, status="queued")

    async def refresh(self, who: Principal, index: str) -> None:
        """Index what changed: start a job now, or, while one runs, mark the index so that the next
        read (`follow_up`) starts it once that one has ended. What vector stores do on every write."""
        try:
            await self.start(who, index)
        except Conflict:
            await asyncio.to_thread(self.files.note, index, "pending", "1")

    async def follow_up(self, who: Principal, index: str) -> None:
        """Start the job a write left pending, once no job of the index runs (keys that may write only)."""
        if not who.may_ingest(index) or await asyncio.to_thread(self.files.noted, index, "pending") is None:
            return
        if await asyncio.to_thread(self.jobs.active, _metadata(index)) is None:
            await asyncio.to_thread(self.files.note, index, "pending", None)
            await self.start(who, index)

    async def latest(self, index: str) -> IndexJob | None:
        """The index's last job started over HTTP (None: none yet), with its report once written."""
        job_id = await asyncio.to_thread(self.files.noted, index, "latest")
        return None if job_id is None else await self._state(index, job_id)

    async def busy(self, index: str) -> bool:
        """A job runs, or files wait for one."""
        if await asyncio.to_thread(self.files.noted, index, "pending") is not None:
            return True
        return await asyncio.to_thread(self.jobs.active, _metadata(index)) is not None

    async def drop(self, who: Principal, index: str) -> IndexJob:
        """Submit `rayrag index drop` for an index a vector store created; 409 while a job of it runs."""
        job = await self._submit(who, index, "drop", lambda _: self._command("drop", index, "--yes"))
        await asyncio.to_thread(self.files.note, index, "pending", None)
        return job

    def entrypoint(self, index: str, job_id: str) -> str:
        """The CLI's own command on the index's source area, writing its report where `job` reads it."""
        source, report = _quote(self.files.source(index)), _quote(self.files.report_location(job_id))
        return self._command("--source", source, "--index", index, "--report-out", report)

    def _command(self, *args: str) -> str:
        """`rayrag index ...` with the served indexes' settings (root, embedder), so what the job
        writes is what the retriever serves."""
        indexes = json.dumps(self.indexes.model_dump(mode="json"))
        return " ".join([sys.executable, "-m", "rayrag", "index", *args, "--set", _quote(f"indexes={indexes}")])

    async def job(self, who: Principal, index: str, job_id: str) -> IndexJob:
        self.may_write(who, index)
        return await self._state(index, job_id)

    async def _state(self, index: str, job_id: str) -> IndexJob:
        found = await asyncio.to_thread(self.jobs.status, job_id)
        if found is None or not _metadata(index).items() <= found[2].items():
            raise NotFound(f"index {index!r} has no job {job_id!r}", param="job_id")
        state, message, _ = found
        job = IndexJob(id=job_id, index=index, status=STATUS.get(state, state.lower()), message=message)
        report = await asyncio.to_thread(self.files.report, job_id)
        if report is None:
            return job
        bad = [_named(note) for note in report.get("skipped", [])]
        return job.model_copy(update={"version": report["version"], "documents": report["documents"],
                                      "chunks": report["chunks"], "bad_files": bad})  # fmt: skip


def _metadata(index: str) -> dict[str, str]:
    """What marks a Ray job as one of this index's (the 409 check finds running ones by it)."""
    return {"rayrag_index": index}


def _named(note: dict[str, str]) -> dict[str, str]:
    """A refused file as the client knows it (its file id and name), with the job's reason."""
    file_id, filename = file_of(note["path"])
    return {"file_id": file_id, "filename": filename, "reason": note["reason"]}


def _quote(value: str) -> str:
    return shlex.quote(value)
