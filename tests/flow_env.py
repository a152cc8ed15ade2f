"""A flow over fake collaborators (no Ray), its real HTTP app, and every door into it: shared by the
unit tier of the answer flow and the security tier."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from evaluation.answering import RagAnswerer
from indexes.config import IndexesConfig
from serving.config import GatewayConfig, RouterConfig, ServeConfig, ServingSettings
from serving.flow import AnswerFlow
from serving.flow_support import LocalRouter
from serving.gateway import create_app
from serving.ingest import Ingest
from serving.router import Router
from serving.stores.keys import KeyStore
from tests.conftest import REPO
from tests.fakes import FakeGenerator, FakeJobs, FakeRetriever

QUESTION = "What is a volcano?"


@dataclass
class Reply:
    status: int
    text: str = ""
    finish: str | None = None
    rid: str | None = None
    error: str | None = None
    cache: str | None = None


class Env:
    """A flow over a fake retriever and a fake generator, its HTTP app, and the evaluation door."""

    def __init__(self, tmp_path: Path, text: str | None = None, auth=None, **gateway) -> None:
        settings = (
            {
                "prompts_dir": str(REPO / "configs" / "prompts"),
                "quotas": {
                    "enabled": True,
                    "sqlite_path": str(tmp_path / "quotas.sqlite"),
                    "requests_per_minute": 1000,
                },
                "records": {"path": str(tmp_path / "records.sqlite")},
                "cache": {"enabled": True, "path": str(tmp_path / "cache.sqlite")},
                "history": {"path": str(tmp_path / "history.sqlite")},
            }
            | ({"auth": {"enabled": True, "store": str(tmp_path / "keys.sqlite"), "env_key_var": None}} if auth else {})
            | gateway
        )
        self.config = GatewayConfig.model_validate(settings)
        self.retriever = FakeRetriever()
        self.generator = FakeGenerator("vllm", model="m", text=text)
        self.router = Router(RouterConfig.model_validate({"chain": [{"backend": "primary"}, {"backend": "extractive"}]}),
                             primary=self.generator)  # fmt: skip
        self.flow = AnswerFlow(self.config, self.retriever, LocalRouter(self.router), indexes=["test"], max_top_k=50)
        self.http = TestClient(create_app(self.flow))

    def spent(self) -> int:
        return self.flow.guard.quotas.counter.get("spent:anonymous")

    # -- the doors ---------------------------------------------------------------------------

    def ask(self, door: str, question: str = QUESTION, extra: list[dict] | None = None, **fields) -> Reply:
        messages = [*(extra or []), {"role": "user", "content": question}]
        chat = {"model": "rag:test", "messages": messages, "max_tokens": 16} | fields
        if door == "cache_hit":
            self.ask("json", question, extra, **fields)
            return self.ask("json", question, extra, **fields)
        if door == "json":
            return _json_reply(self.http.post("/v1/chat/completions", json=chat), "message")
        if door == "sse":
            return _sse_reply(self.http, "/v1/chat/completions", chat | {"stream": True}, "delta")
        if door == "websocket":
            return self._socket(chat)
        completion = {"model": "rag:test", "prompt": question, "max_tokens": 16}
        if door == "completion":
            return _json_reply(self.http.post("/v1/completions", json=completion), "text")
        if door == "completion_stream":
            return _sse_reply(self.http, "/v1/completions", completion | {"stream": True}, "text")
        if door == "query":
            reply = self.http.post("/v1/query", json={"query": question, "index": "test", "max_tokens": 16})
            body = reply.json()
            if reply.status_code != 200:
                return Reply(reply.status_code, error=body["error"]["code"])
            return Reply(200, body["answer"], body["finish_reason"], body["id"])
        return self._evaluation(question)

    def _socket(self, chat: dict) -> Reply:
        with self.http.websocket_connect("/v1/chat/ws") as socket:
            socket.send_text(json.dumps(chat))
            text, finish = "", None
            while True:
                event = socket.receive_json()
                if event["type"] == "error":
                    return Reply(400, error=event["error"]["code"])
                if event["type"] == "done":
                    return Reply(200, text, finish, event["request_id"])
                text += event.get("text", "")
                finish = event.get("finish_reason") or finish

    def _evaluation(self, question: str) -> Reply:
        serve = ServeConfig.model_validate({"retriever": {"indexes": ["test"]}, "primary": None})
        settings = ServingSettings(serve=serve.model_copy(update={"gateway": self.config}))
        answerer = RagAnswerer(settings, retriever=self.retriever, generator=self.generator)
        try:
            row = asyncio.run(answerer.answer(question))
        except Exception as exc:  # noqa: BLE001 - the door's refusal is the observation
            return Reply(400, error=getattr(exc, "code", type(exc).__name__))
        return Reply(200, row["answer"], row["finish_reason"], "eval")


def _json_reply(response, key: str) -> Reply:
    body = response.json()
    if response.status_code != 200:
        return Reply(response.status_code, error=body["error"]["code"])
    choice = body["choices"][0]
    text = choice["message"]["content"] if key == "message" else choice["text"]
    return Reply(200, text, choice["finish_reason"], body["id"], cache=response.headers.get("x-rayrag-cache"))


def _sse_reply(http: TestClient, path: str, body: dict, key: str) -> Reply:
    with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            return Reply(response.status_code, error=json.loads(response.read())["error"]["code"])
        text, finish, rid = "", None, None
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            rid = chunk["id"]
            for choice in chunk["choices"]:
                text += choice["delta"].get("content", "") if key == "delta" else choice["text"]
                finish = choice["finish_reason"] or finish
    return Reply(200, text, finish, rid)


class Ingesting:
    """An `Env` (auth on) whose app has the ingest routes on, over fake jobs, and three keys."""

    def __init__(self, tmp_path, **limits) -> None:
        self.root = tmp_path / "ingest"
        self.env = Env(tmp_path, auth=True, ingest={"enabled": True, "root": str(self.root)} | limits)
        self.jobs = FakeJobs()
        self.ingest = Ingest(self.env.config.ingest, IndexesConfig(root=str(tmp_path / "indexes")), self.jobs)
        self.env.http = TestClient(create_app(self.env.flow, self.ingest))
        store = KeyStore(tmp_path / "keys.sqlite")
        self.keys = {
            "writer": store.create("acme", ["test"], ["*"], ingest=["test"])[0],
            "reader": store.create("acme", ["test"], ["*"])[0],
            "rival": store.create("rival", ["*"], ["*"], ingest=["*"])[0],
        }

    def call(self, method: str, path: str, key: str = "writer", **kwargs):
        headers = {"authorization": f"Bearer {self.keys[key]}"}
        return self.env.http.request(method, path, headers=headers, **kwargs)

    def upload(self, name: str, data: bytes, key: str = "writer"):
        return self.call("POST", "/v1/files", key, files={"file": (name, data)}, data={"purpose": "assistants"})
