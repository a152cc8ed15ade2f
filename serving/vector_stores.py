"""OpenAI's vector-store API and the Responses API's `file_search` tool, over rayrag's indexes.

One vector store is one served index (`vs_<index>`), its files are the uploads in the index's
source area, a file's status is what the served index holds (`completed`: its document is in the
version the retriever serves; `failed`: the last job refused it, with the job's reason; else
`in_progress`), and every write (adding or removing files, a file batch) starts the index job, or
leaves it pending while one runs: the next read of the store starts it (serving/ingest.py).
`vector_stores.search` is `/v1/search`, and `responses.create(tools=[{"type": "file_search", ...}])`
is a RAG chat on that index, its citations as `file_citation` annotations. Both go through the
gateway's flow, so admission, scopes, screens, quotas and records hold as on every door.

A store for a new index needs `serve.gateway.ingest.create_indexes` (and a discovering retriever,
`serve.retriever.discover`): its first job publishes the index, the retriever then serves it, and
deleting the store drops the index with `rayrag index drop` as a job, so the index root stays
written by jobs only. An index declared in `serve.retriever.indexes` is never dropped over HTTP.
Not supported, refused with a 400 naming the parameter rather than ignored: attribute `filters` and
`rewrite_query` on a search, more than one vector store per `file_search`, other tools, and
streamed responses.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, Field

from serving import transports
from serving.errors import InvalidRequest, NotFound
from serving.ingest import Ingest
from serving.openai_protocol import ChatCompletionRequest, _Lenient
from serving.protocol import SearchRequest
from serving.rag import citations_of
from serving.stores.files import FILE_ID, file_of
from serving.stores.keys import Principal

PREFIX = "vs_"


def store_id(index: str) -> str:
    return f"{PREFIX}{index}"


def index_of(vector_store_id: str) -> str:
    if not vector_store_id.startswith(PREFIX) or len(vector_store_id) == len(PREFIX):
        raise NotFound(f"no vector store {vector_store_id!r}", param="vector_store_id")
    return vector_store_id.removeprefix(PREFIX)


class CreateStore(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    file_ids: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, str] | None = None


class AddFile(BaseModel):
    file_id: str = Field(pattern=FILE_ID)


class AddBatch(BaseModel):
    file_ids: list[str] = Field(min_length=1, max_length=100)


class StoreSearch(BaseModel):
    query: str | list[str]
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    rewrite_query: bool = False
    ranking_options: dict[str, Any] | None = None  # accepted; the index's own ranking applies


class VectorStores:
    """The vector-store routes' service, over the flow (search, index scope) and `Ingest` (files, jobs)."""

    def __init__(self, flow: Any, ingest: Ingest) -> None:
        self.flow, self.ingest = flow, ingest

    async def _known(self, who: Principal) -> list[str]:
        """Served indexes the key may read, and those a vector store created that wait for a version."""
        served = set(await self.flow.indexes_for(who))
        created = await asyncio.to_thread(self.ingest.files.created) if self.ingest.config.create_indexes else []
        return sorted(served | {name for name in created if who.may_use_index(name)})

    async def _readable(self, who: Principal, vector_store_id: str) -> str:
        index = index_of(vector_store_id)
        self.flow.guard.check_index(who, index)
        if index not in await self._known(who):
            raise NotFound(f"no vector store {vector_store_id!r}", param="vector_store_id")
        return index

    async def card(self, who: Principal, index: str) -> dict:
        await self.ingest.follow_up(who, index)
        attached = await self.ingest.attached(index) if self.ingest.config.enabled else {}
        latest = await self.ingest.latest(index) if attached else None
        failed = {b["file_id"] for b in latest.bad_files} & set(attached) if latest else set()
        busy = bool(attached) and await self.ingest.busy(index)
        waiting = len(attached) - len(failed) if busy else 0
        counts = {"in_progress": waiting, "completed": len(attached) - len(failed) - waiting, "failed": len(failed),
                  "cancelled": 0, "total": len(attached)}  # fmt: skip
        return {"id": store_id(index), "object": "vector_store", "created_at": 0, "name": index, "usage_bytes": 0,
                "file_counts": counts, "status": "in_progress" if busy else "completed", "last_active_at": int(time.time()),
                "metadata": {}, "expires_after": None, "expires_at": None}  # fmt: skip

    async def create(self, who: Principal, body: CreateStore) -> dict:
        """A store for a served index, or (with `ingest.create_indexes`) a new index that its first
        job publishes and the discovering retriever then serves."""
        index = self.ingest.may_write(who, body.name)
        if index not in await self._known(who):
            if not self.ingest.config.create_indexes:
                raise InvalidRequest(f"index {index!r} is not served: declare it in serve.retriever.indexes, or set "
                                     "serve.gateway.ingest.create_indexes", param="name")  # fmt: skip
            await asyncio.to_thread(self.ingest.files.mark_created, index, True)
        for file_id in body.file_ids:
            await self.ingest.attach(who, index, file_id)
        if body.file_ids:
            await self.ingest.refresh(who, index)
        return await self.card(who, index)

    async def list(self, who: Principal) -> list[dict]:
        return [await self.card(who, index) for index in await self._known(who)]

    async def delete(self, who: Principal, vector_store_id: str) -> None:
        """Drop an index a vector store created: its files are taken out (the uploads stay) and
        `rayrag index drop` runs as a job; the retriever stops serving it once it is gone."""
        index = self.ingest.may_write(who, await self._readable(who, vector_store_id))
        if index not in await asyncio.to_thread(self.ingest.files.created):
            raise InvalidRequest(f"index {index!r} was not created over HTTP: remove its files, or remove it from "
                                 "serve.retriever.indexes", param="vector_store_id")  # fmt: skip
        await self.ingest.drop(who, index)
        for file_id in await self.ingest.attached(index):
            await asyncio.to_thread(self.ingest.files.detach, index, file_id)
        await asyncio.to_thread(self.ingest.files.mark_created, index, False)

    async def retrieve(self, who: Principal, vector_store_id: str) -> dict:
        return await self.card(who, await self._readable(who, vector_store_id))

    async def add(self, who: Principal, vector_store_id: str, file_ids: list[str]) -> list[dict]:
        index = self.ingest.may_write(who, await self._readable(who, vector_store_id))
        for file_id in file_ids:
            await self.ingest.attach(who, index, file_id)
        await self.ingest.refresh(who, index)
        attached = await self.ingest.attached(index)
        return await self._statuses(index, {file_id: attached[file_id] for file_id in file_ids})

    async def file(self, who: Principal, vector_store_id: str, file_id: str) -> dict:
        index = await self._readable(who, vector_store_id)
        await self.ingest.follow_up(who, index)
        source = (await self.ingest.attached(index)).get(file_id)
        if source is None:
            raise NotFound(f"file {file_id!r} is not in vector store {vector_store_id!r}", param="file_id")
        return (await self._statuses(index, {file_id: source}))[0]

    async def files(
        self, who: Principal, vector_store_id: str, limit: int = 20, after: str | None = None
    ) -> tuple[list[dict], bool]:
        """One page of the store's files (by id, after `after`), and whether there are more."""
        index = await self._readable(who, vector_store_id)
        await self.ingest.follow_up(who, index)
        attached = [
            (f, key) for f, key in sorted((await self.ingest.attached(index)).items()) if not after or f > after
        ]
        return await self._statuses(index, dict(attached[:limit])), len(attached) > limit

    async def _statuses(self, index: str, sources: dict[str, str]) -> list[dict]:
        """Each file's status (file id -> source key): `failed` with the last job's reason when it
        refused the file, `completed` once the served version holds it, else `in_progress`."""
        latest, busy = await self.ingest.latest(index), await self.ingest.busy(index)
        refused = {b["file_id"]: b["reason"] for b in latest.bad_files} if latest and not busy else {}
        statuses = []
        for file_id, source in sources.items():
            status, error = "in_progress", None
            if file_id in refused:
                status, error = "failed", {"code": "invalid_file", "message": refused[file_id]}
            elif await self._served(index, source):
                status = "completed"
            statuses.append({"id": file_id, "object": "vector_store.file", "created_at": 0, "status": status,
                             "vector_store_id": store_id(index), "usage_bytes": 0, "last_error": error,
                             "attributes": {}})  # fmt: skip
        return statuses

    async def _served(self, index: str, source: str) -> bool:
        try:
            await self.flow.retriever.document(index, source)
            return True
        except NotFound:
            return False

    async def remove(self, who: Principal, vector_store_id: str, file_id: str) -> None:
        index = self.ingest.may_write(who, await self._readable(who, vector_store_id))
        await self.ingest.detach(who, index, file_id)
        await self.ingest.refresh(who, index)

    async def search(self, who: Principal, vector_store_id: str, body: StoreSearch) -> dict:
        if body.filters is not None:
            raise InvalidRequest("attribute filters are not supported; /v1/search filters by source and section",
                                 param="filters")  # fmt: skip
        if body.rewrite_query:
            raise InvalidRequest("rewrite_query is not supported", param="rewrite_query")
        queries = [body.query] if isinstance(body.query, str) else body.query
        if len(queries) != 1:
            raise InvalidRequest("send one query", param="query")
        index = await self._readable(who, vector_store_id)
        found = await self.flow.search(who, SearchRequest(query=queries[0], index=index, top_k=body.max_num_results))
        data = []
        for chunk in found.chunks:
            file_id, filename = file_of(chunk.source)
            attributes = {"source": chunk.source, "title": chunk.title, "section": chunk.section, "page": chunk.page}
            data.append({"file_id": file_id, "filename": filename, "score": chunk.score,
                         "attributes": {k: v for k, v in attributes.items() if v is not None},
                         "content": [{"type": "text", "text": chunk.text}]})  # fmt: skip
        return {"object": "vector_store.search_results.page", "search_query": queries, "data": data,
                "has_more": False, "next_page": None}  # fmt: skip


# -- the Responses API's file_search ---------------------------------------------------------------


class ResponsesRequest(_Lenient):
    """`client.responses.create(model, input, tools=[{"type": "file_search", "vector_store_ids": [id]}])`."""

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=8)
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stream: bool = False


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "input_text" | "output_text", "text": ...}]
        return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise InvalidRequest("input content must be text", param="input")


def response_turn(who: Principal, rid: str, client_rid: str | None, body: ResponsesRequest) -> tuple[Any, dict, str]:
    """The chat turn a file_search response is (a RAG chat on the one vector store's index), the
    tool, and the question (the last message)."""
    if body.stream:
        raise InvalidRequest("streamed responses are not supported; /v1/chat/completions streams", param="stream")
    searches = [t for t in body.tools if t.get("type") == "file_search"]
    if len(searches) != 1 or len(body.tools) != 1 or len(searches[0].get("vector_store_ids") or []) != 1:
        raise InvalidRequest("send one file_search tool with one vector store id; other tools are not supported",
                             param="tools")  # fmt: skip
    index = index_of(searches[0]["vector_store_ids"][0])
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    messages = [{"role": "system", "content": body.instructions}] if body.instructions else []
    messages += [{"role": item.get("role", "user"), "content": _text(item.get("content"))} for item in items]
    chat = ChatCompletionRequest(model=f"rag:{index}", messages=messages, max_tokens=body.max_output_tokens,
                                 temperature=body.temperature)  # fmt: skip
    return transports.chat_turn(who, rid, client_rid, chat), searches[0], messages[-1]["content"]


def response_json(outcome: Any, question: str, tool: dict) -> dict:
    """OpenAI's response object: the file_search call, then the message whose citations are annotations."""
    text, rid = outcome.text, outcome.rid
    annotations = []
    for citation in citations_of(outcome.extra):
        file_id, filename = file_of(citation.source)
        at = text.find(f"[{citation.n}]")
        annotations.append({"type": "file_citation", "index": at if at >= 0 else len(text), "file_id": file_id,
                            "filename": filename})  # fmt: skip
    usage = outcome.result.usage
    return {
        "id": f"resp_{rid}", "object": "response", "created_at": int(time.time()), "status": "completed",
        "model": outcome.result.model, "tools": [tool], "tool_choice": "auto", "parallel_tool_calls": False,
        "output": [
            {"type": "file_search_call", "id": f"fs_{rid}", "status": "completed",
             "queries": [(outcome.extra.get("query") or {}).get("text") or question], "results": None},
            {"type": "message", "id": f"msg_{rid}", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": text, "annotations": annotations}]},
        ],
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
        "rayrag": outcome.extra | {"steps": outcome.result.steps},
    }  # fmt: skip
