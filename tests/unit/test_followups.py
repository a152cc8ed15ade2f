"""A follow-up turn is searched with the conversation: rewritten by the chain's model when there is
one (bounded in time, charged to the key), with the recent user turns otherwise."""

from __future__ import annotations

import asyncio

import pytest

from serving.config import FollowupConfig
from serving.followups import EXAMPLES, REWRITE_INSTRUCTIONS, FollowupQueries, cleaned, transcript, turns_query
from serving.generator.protocol import Choice, GenerationRequest, GenerationResult, Message, Usage
from tests.flow_env import QUESTION, Env

pytestmark = pytest.mark.unit
FIRST, FOLLOWUP = "How are lists implemented in CPython?", "And dictionaries?"
CONVERSATION = [
    Message(role="user", content=FIRST),
    Message(role="assistant", content="As arrays of pointers to objects."),
    Message(role="user", content=FOLLOWUP),
]


def _result(text: str, tokens: int = 5) -> GenerationResult:
    return GenerationResult(model="m", backend="vllm", choices=[Choice(index=0, text=text, finish_reason="stop")],
                            usage=Usage(prompt_tokens=tokens, completion_tokens=tokens))  # fmt: skip


class Rewriter:
    """The chain's generator as the follow-up stage sees it: answers `text`, or raises `fail`, or
    never answers (`hang`); records what it was asked."""

    def __init__(self, text: str = "", fail: Exception | None = None, hang: bool = False) -> None:
        self.text, self.fail, self.hang, self.asked = text, fail, hang, []

    async def __call__(self, request: GenerationRequest) -> GenerationResult:
        self.asked.append(request)
        if self.hang:
            await asyncio.Event().wait()  # never set: only the stage's own timeout ends this
        if self.fail is not None:
            raise self.fail
        return _result(self.text)


def _query(rewriter=None, messages=CONVERSATION, **config):
    queries = FollowupQueries(FollowupConfig(**config), rewriter)
    return asyncio.run(queries.query(messages))


# -- the deterministic query ------------------------------------------------------------------


def test_the_user_turns_lead_with_the_last_one():
    assert turns_query(CONVERSATION, turns=2, max_chars=1000) == f"{FOLLOWUP}\n{FIRST}"
    assert turns_query(CONVERSATION, turns=1, max_chars=1000) == FOLLOWUP


def test_the_user_turns_fit_the_budget_cutting_earlier_turns_first():
    query = turns_query(CONVERSATION, turns=2, max_chars=30)
    assert len(query) <= 30 and query.startswith(FOLLOWUP)
    assert turns_query([Message(role="user", content="x" * 5000)], turns=2, max_chars=100) == "x" * 100


def test_a_first_turn_is_searched_as_it_is_and_costs_nothing():
    rewriter = Rewriter("anything")
    followup = _query(rewriter, [Message(role="system", content="Be brief."), Message(role="user", content=FIRST)])
    assert (followup.query, followup.by, followup.usage.total_tokens) == (FIRST, "message", 0)
    assert rewriter.asked == []


def test_without_a_model_a_followup_is_searched_with_the_user_turns():
    followup = _query(None)
    assert (followup.query, followup.by) == (f"{FOLLOWUP}\n{FIRST}", "turns")


@pytest.mark.parametrize("rewrite, expected", [("turns", f"{FOLLOWUP}\n{FIRST}"), ("off", FOLLOWUP)])
def test_the_rewrite_setting_is_obeyed(rewrite, expected):
    rewriter = Rewriter("How are dictionaries implemented in CPython?")
    assert _query(rewriter, rewrite=rewrite).query == expected
    assert rewriter.asked == []


# -- the model's rewrite ----------------------------------------------------------------------


def test_the_model_rewrites_the_followup_from_the_conversation():
    rewriter = Rewriter('Standalone question: "How are dictionaries implemented in CPython?"\nBecause...')
    followup = _query(rewriter)
    assert (followup.query, followup.by, followup.usage.total_tokens) == (
        f"How are dictionaries implemented in CPython?\n{FOLLOWUP}\n{FIRST}", "model", 10,
    )  # fmt: skip
    asked = rewriter.asked[0]
    assert asked.messages[0].content == REWRITE_INSTRUCTIONS and asked.temperature == 0.0
    assert FIRST in asked.messages[-1].content and FOLLOWUP in asked.messages[-1].content
    assert [m.role for m in asked.messages[1:-1]] == ["user", "assistant"] * len(EXAMPLES)


def test_a_long_rewrite_leaves_room_for_the_users_own_words():
    followup = _query(Rewriter("How " + "very " * 300 + "?"), max_chars=200)
    assert followup.by == "turns" and followup.query == f"{FOLLOWUP}\n{FIRST}"
    followup = _query(Rewriter("How are dictionaries implemented in CPython?"), max_chars=100)
    assert len(followup.query) <= 100 and followup.query.startswith("How are dictionaries implemented in CPython?\nAnd")


@pytest.mark.parametrize("rewriter", [Rewriter(hang=True), Rewriter(fail=RuntimeError("engine died"))],
                         ids=["late", "failing"])  # fmt: skip
def test_a_late_or_failing_rewrite_falls_back_to_the_user_turns(rewriter):
    followup = _query(rewriter, timeout_s=0.05)
    assert (followup.query, followup.by) == (f"{FOLLOWUP}\n{FIRST}", "turns")


def test_an_unusable_rewrite_falls_back_but_is_still_charged():
    followup = _query(Rewriter("   \n  "))
    assert (followup.by, followup.usage.total_tokens) == ("turns", 10)
    assert cleaned("x" * 2000, max_chars=1000) is None and cleaned("Question: ok?", 1000) == "ok?"


def test_what_the_rewriter_reads_is_bounded_whatever_the_client_sends():
    flood = [Message(role="user" if n % 2 == 0 else "assistant", content="word " * 5000) for n in range(200)]
    assert len(transcript(flood)) < 3000


# -- through the flow, on every chat door -----------------------------------------------------

REWRITTEN = "What is lava, the molten rock of a volcano?"


def _rewrites(request: GenerationRequest) -> str | None:
    return REWRITTEN if request.messages and request.messages[0].content == REWRITE_INSTRUCTIONS else None


@pytest.mark.parametrize("door", ["json", "sse", "websocket"])
def test_a_followup_on_any_chat_door_is_searched_with_the_rewrite_and_the_key_pays_for_it(tmp_path, door):
    env = Env(tmp_path)
    env.generator.reply = _rewrites
    env.ask("json", session_id="s")
    spent = env.spent()
    reply = env.ask(door, question="And lava?", session_id="s")
    assert reply.status == 200
    assert env.retriever.searches[-1][0].query == f"{REWRITTEN}\nAnd lava?\n{QUESTION}"
    record = env.http.get(f"/v1/records/{reply.rid}").json()
    plain = Env(tmp_path / "turns", followups={"rewrite": "turns"})
    plain.ask("json", session_id="s")
    before = plain.spent()
    plain.ask(door, question="And lava?", session_id="s")
    rewrite_tokens = 3 + len(REWRITTEN.split(" "))  # the fake's usage for the rewrite
    assert env.spent() - spent == plain.spent() - before + rewrite_tokens
    assert plain.retriever.searches[-1][0].query == f"And lava?\n{QUESTION}"
    assert record["usage"]["total_tokens"] > 0


def test_the_answer_says_what_a_followup_was_searched_with(tmp_path):
    env = Env(tmp_path, followups={"rewrite": "turns"})
    env.ask("json", session_id="s")
    body = env.http.post("/v1/chat/completions", json={
        "model": "rag:test", "messages": [{"role": "user", "content": "And lava?"}], "session_id": "s", "max_tokens": 16,
    }).json()  # fmt: skip
    assert body["rayrag"]["query"] == {"text": f"And lava?\n{QUESTION}", "by": "turns"}


def test_a_rewrite_the_output_screen_stops_is_never_shown(tmp_path):
    env = Env(tmp_path)
    leak = " ".join(env.flow.guard.guardrails.system_prompt.split())[:300]
    assert env.flow.guard.guardrails.screen_output(leak) == "system_prompt_leak"
    env.generator.reply = lambda request: leak if request.messages[0].content == REWRITE_INSTRUCTIONS else "Lava."
    env.ask("json", session_id="s")
    body = env.http.post("/v1/chat/completions", json={
        "model": "rag:test", "messages": [{"role": "user", "content": "And lava?"}], "session_id": "s", "max_tokens": 16,
    }).json()  # fmt: skip
    assert body["rayrag"]["query"] == {"text": None, "by": "model"}
    assert env.retriever.searches[-1][0].query.startswith(leak[:40])  # searched with all the same
