"""The ingest routes: OpenAI's `/v1/files`, an index's documents and jobs (serving/ingest.py), and
OpenAI's vector stores and `file_search` responses over them (serving/vector_stores.py).

    POST   /v1/files                          multipart `file` + `purpose` -> file object
    GET    /v1/files, /v1/files/{id}          the tenant's uploads
    DELETE /v1/files/{id}                     the upload, and its copy in every index's sources
    GET    /v1/indexes/{index}/files          the files an index is built from
    POST   /v1/indexes/{index}/files          {"file_id"}: add an upload to the index's sources
    DELETE /v1/indexes/{index}/files/{id}     take it out (its chunks go with the next job)
    POST   /v1/indexes/{index}/jobs           start `rayrag index` on the cluster (409 while one runs)
    GET    /v1/indexes/{index}/jobs/{job_id}  its state, counts, version and the files it refused

    /v1/vector_stores[...]                    create, list, retrieve; files, file batches, search
    POST   /v1/responses                      a RAG answer with the `file_search` tool

Every route is admitted like any other (key, quota); writes need the key's `ingest` scope for the
index. An upload's body is bounded by `ingest.max_file_bytes` (413) before it is parsed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from serving import edge
from serving.edge import PayloadTooLarge
from serving.ingest import IndexJob, Ingest
from serving.stores.files import FILE_ID, FileObject
from serving.vector_stores import (
    AddBatch,
    AddFile,
    CreateStore,
    ResponsesRequest,
    StoreSearch,
    VectorStores,
    response_json,
    response_turn,
)

FileId = Annotated[str, PathParam(pattern=FILE_ID)]
StoreId = Annotated[str, PathParam(max_length=80)]
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


class AttachRequest(BaseModel):
    file_id: str = Field(pattern=FILE_ID)


def body_limits(ingest: Ingest) -> dict[str, int]:
    """The upload route's own body limit, for the edge's `BodyLimit`."""
    return {"/v1/files": ingest.config.max_file_bytes + MULTIPART_OVERHEAD}


def who(request: Request):
    """The admitted caller (key, quota), as on every route."""
    return request.app.state.flow.admit(request.headers)


def install(app: FastAPI, ingest: Ingest) -> None:
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


def install_vector_stores(app: FastAPI, stores: VectorStores) -> None:
    def page(data: list[dict], has_more: bool = False) -> dict:
        ids = [d["id"] for d in data]
        return {"object": "list", "data": data, "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None, "has_more": has_more}  # fmt: skip

    @app.post("/v1/vector_stores", tags=["vector stores"])
    async def create_store(body: CreateStore, request: Request) -> dict:
        return await stores.create(who(request), body)

    @app.get("/v1/vector_stores", tags=["vector stores"])
    async def list_stores(request: Request) -> dict:
        return page(await stores.list(who(request)))

    @app.get("/v1/vector_stores/{vector_store_id}", tags=["vector stores"])
    async def get_store(vector_store_id: StoreId, request: Request) -> dict:
        return await stores.retrieve(who(request), vector_store_id)

    @app.delete("/v1/vector_stores/{vector_store_id}", tags=["vector stores"])
    async def delete_store(vector_store_id: StoreId, request: Request) -> dict:
        await stores.delete(who(request), vector_store_id)
        return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}

    @app.post("/v1/vector_stores/{vector_store_id}/files", tags=["vector stores"])
    async def add_file(vector_store_id: StoreId, body: AddFile, request: Request) -> dict:
        return (await stores.add(who(request), vector_store_id, [body.file_id]))[0]

    @app.post("/v1/vector_stores/{vector_store_id}/file_batches", tags=["vector stores"])
    async def add_batch(vector_store_id: StoreId, body: AddBatch, request: Request) -> dict:
        files = await stores.add(who(request), vector_store_id, body.file_ids)
        counts = {state: sum(f["status"] == state for f in files) for state in ("in_progress", "completed", "failed")}
        return {"id": f"vsfb_{edge.request_id(request)}", "object": "vector_store.files_batch", "created_at": 0,
                "vector_store_id": vector_store_id, "status": "in_progress" if counts["in_progress"] else "completed",
                "file_counts": counts | {"cancelled": 0, "total": len(files)}}  # fmt: skip

    @app.get("/v1/vector_stores/{vector_store_id}/files", tags=["vector stores"])
    async def list_store_files(
        vector_store_id: StoreId, request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[str | None, Query(pattern=FILE_ID)] = None,
    ) -> dict:  # fmt: skip
        """OpenAI's page: `limit` (at most 100) files by id, after the cursor `after`."""
        files, more = await stores.files(who(request), vector_store_id, limit, after)
        return page(files, more)

    @app.get("/v1/vector_stores/{vector_store_id}/files/{file_id}", tags=["vector stores"])
    async def get_store_file(vector_store_id: StoreId, file_id: FileId, request: Request) -> dict:
        return await stores.file(who(request), vector_store_id, file_id)

    @app.delete("/v1/vector_stores/{vector_store_id}/files/{file_id}", tags=["vector stores"])
    async def remove_store_file(vector_store_id: StoreId, file_id: FileId, request: Request) -> dict:
        await stores.remove(who(request), vector_store_id, file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    @app.post("/v1/vector_stores/{vector_store_id}/search", tags=["vector stores"])
    async def search_store(vector_store_id: StoreId, body: StoreSearch, request: Request) -> dict:
        return await stores.search(who(request), vector_store_id, body)

    @app.post("/v1/responses", tags=["openai"])
    async def responses(body: ResponsesRequest, request: Request) -> dict:
        turn, tool, question = response_turn(
            who(request), edge.request_id(request), edge.client_request_id(request), body
        )
        return response_json(await stores.flow.answer(turn), question, tool)
