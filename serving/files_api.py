"""The ingest routes: OpenAI's `/v1/files`, and an index's documents and jobs (serving/ingest.py).

    POST   /v1/files                          multipart `file` + `purpose` -> file object
    GET    /v1/files, /v1/files/{id}          the tenant's uploads
    DELETE /v1/files/{id}                     the upload, and its copy in every index's sources
    GET    /v1/indexes/{index}/files          the files an index is built from
    POST   /v1/indexes/{index}/files          {"file_id"}: add an upload to the index's sources
    DELETE /v1/indexes/{index}/files/{id}     take it out (its chunks go with the next job)
    POST   /v1/indexes/{index}/jobs           start `rayrag index` on the cluster (409 while one runs)
    GET    /v1/indexes/{index}/jobs/{job_id}  its state, counts, version and the files it refused

Every route is admitted like any other (key, quota); writes need the key's `ingest` scope for the
index. An upload's body is bounded by `ingest.max_file_bytes` (413) before it is parsed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from serving.edge import PayloadTooLarge
from serving.ingest import IndexJob, Ingest
from serving.stores.files import FILE_ID, FileObject

FileId = Annotated[str, PathParam(pattern=FILE_ID)]
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


class AttachRequest(BaseModel):
    file_id: str = Field(pattern=FILE_ID)


def body_limits(ingest: Ingest) -> dict[str, int]:
    """The upload route's own body limit, for the edge's `BodyLimit`."""
    return {"/v1/files": ingest.config.max_file_bytes + MULTIPART_OVERHEAD}


def install(app: FastAPI, ingest: Ingest) -> None:
    def who(request: Request):
        return request.app.state.flow.admit(request.headers)

    @app.post("/v1/files", tags=["ingest"], response_model=FileObject)
    async def upload(
        request: Request, file: Annotated[UploadFile, File()],
        purpose: Annotated[str, Form(max_length=64)] = "assistants",
    ) -> FileObject:  # fmt: skip
        caller = who(request)
        data = await file.read(ingest.config.max_file_bytes + 1)
        if len(data) > ingest.config.max_file_bytes:
            raise PayloadTooLarge(f"file is over the limit of {ingest.config.max_file_bytes} bytes", param="file")
        return await ingest.upload(caller, file.filename or "upload", data, purpose)

    @app.get("/v1/files", tags=["ingest"])
    async def list_files(request: Request) -> dict:
        files = await ingest.list_files(who(request))
        return {"object": "list", "data": [f.model_dump() for f in files]}

    @app.get("/v1/files/{file_id}", tags=["ingest"], response_model=FileObject)
    async def get_file(file_id: FileId, request: Request) -> FileObject:
        return await ingest.file(who(request), file_id)

    @app.delete("/v1/files/{file_id}", tags=["ingest"])
    async def delete_file(file_id: FileId, request: Request) -> dict:
        await ingest.delete(who(request), file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/indexes/{index}/files", tags=["ingest"])
    async def index_files(index: str, request: Request) -> dict:
        ingest.may_write(who(request), index)
        attached = await ingest.attached(index)
        return {"object": "list", "data": [{"file_id": f, "source": key} for f, key in attached.items()]}

    @app.post("/v1/indexes/{index}/files", tags=["ingest"])
    async def attach(index: str, body: AttachRequest, request: Request) -> dict:
        file = await ingest.attach(who(request), index, body.file_id)
        return {"object": "index.file", "index": index, "file_id": file.id, "filename": file.filename}

    @app.delete("/v1/indexes/{index}/files/{file_id}", tags=["ingest"])
    async def detach(index: str, file_id: FileId, request: Request) -> dict:
        await ingest.detach(who(request), index, file_id)
        return {"object": "index.file", "index": index, "file_id": file_id, "deleted": True}

    @app.post("/v1/indexes/{index}/jobs", tags=["ingest"], response_model=IndexJob)
    async def start_job(index: str, request: Request) -> IndexJob:
        return await ingest.start(who(request), index)

    @app.get("/v1/indexes/{index}/jobs/{job_id}", tags=["ingest"], response_model=IndexJob)
    async def job(
        index: str, job_id: Annotated[str, PathParam(max_length=128)], request: Request
    ) -> IndexJob:  # fmt: skip
        return await ingest.job(who(request), index, job_id)
