"""The one answer flow: every way in (chat JSON and SSE, completions and their stream, the websocket,
`/v1/query`, a semantic-cache hit, the evaluation job) goes through these stages, in this order:

    admit → screen input → route → cache probe → ground → generate → screen output
          → account → record → remember (→ cache store)

Transports are thin adapters (serving/gateway.py, serving/transports.py, evaluation's answerer):
they turn a request into a `Turn`, and an `Outcome` or a stream of `Delta`s back into their wire
format. None of them re-implements a stage, so a guarantee (screened, charged, recorded,
remembered) holds on every door or on none. Settling (account, record, remember) runs in a
`finally`: an answer is charged for what was generated also when the client disconnects, the
content filter stops a stream, or a later stage fails.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from serving.answers import Answer, CacheProbe, Grounding, Outcome, Plan, Route, Turn, grades_summary, rag_extra
from serving.errors import InvalidRequest, LimitExceeded, ModelNotFound
from serving.flow_support import ALLOWED_MODELS, FlowSupport
from serving.generator.protocol import Delta, GenerationRequest, GenerationResult, Message, Usage
from serving.openai_protocol import RAG_PREFIX
from serving.protocol import SearchRequest, SearchResult
from serving.rag import question_of
from serving.stores.keys import Principal
from serving.telemetry.tracing import stage

log = logging.getLogger(__name__)


class AnswerFlow(FlowSupport):
    """The stages of an answer, with the collaborators injected (see `FlowSupport`)."""

    def admit(self, headers: Mapping[str, str]) -> Principal:
        """Key and quota: the first stage of every door (a `Turn` needs the `Principal` it returns)."""
        return self.guard.admit(headers)

    async def search(self, who: Principal, body: SearchRequest) -> SearchResult:
        """Retrieval alone (`/v1/search`, MCP's `search`): index scope, bounds, the query screened."""
        self.guard.check_index(who, body.index)
        self.guard.check_search(body)
        body = body.model_copy(update={"query": self.guard.screen(body.query, "query")})
        return await self.retriever.search(body)

    async def indexes_for(self, who: Principal) -> dict[str, dict]:
        """The served indexes this key may use, with their versions (`/v1/models`, MCP's `list_indexes`)."""
        return {n: info for n, info in (await self.retriever.describe()).items() if who.may_use_index(n)}

    # -- before generation -----------------------------------------------------------------------

    async def plan(self, turn: Turn) -> Plan:
        """Screen input → route → history → cache probe → ground: everything before a model runs."""
        self.guard.check_count(len(turn.sampling.get("stop") or []), self.config.limits.max_stop, "stop")
        if turn.search is not None:
            self.guard.check_search(turn.search)
        asked = self.guard.screen_messages(turn.messages) if turn.messages is not None else None
        prompt = self.guard.screen(turn.prompt, "prompt") if turn.prompt is not None else None
        route = await self._route(turn)
        messages = self.conversations.with_history(turn.who, turn.session_id, asked) if asked else None
        if route.index is None:
            generation = self._generation(turn, messages, prompt=prompt, route=route)
            return Plan(turn, asked, route, generation)
        messages = messages or [Message(role="user", content=prompt)]
        with stage("followup"):
            # rewritten by the model this request asked for, or within the models its key may use
            allowed = [route.generator] if route.generator else turn.who.model_scope
            followup = await self.followups.query(messages, allowed)
        search = self._search(turn, route, followup.query)
        probe = await self._cache_probe(turn, route, messages, search)
        if probe is not None and probe.hit is not None:
            return Plan(turn, asked, route, None, search=search, probe=probe)
        grounded = await self.ground(messages, search, turn.prompt_template, vector=probe and probe.vector)
        generation = self._generation(turn, grounded.messages, grounded=grounded, route=route)
        return Plan(turn, asked, route, generation, grounded, search, probe, followup=followup)

    async def _route(self, turn: Turn) -> Route:
        """`rag:<index>` (or `/v1/query`'s index) leads to an index, anything else to a generator.
        The key's scope is checked here once: its indexes, and its models also on RAG routes (the
        router is then held to the models the key may use)."""
        who, model = turn.who, turn.model
        index = turn.search.index if turn.search is not None else None
        if model is not None and model.startswith(RAG_PREFIX):
            index = model[len(RAG_PREFIX) :]
            model = None
        if model is not None:
            self.guard.check_model(who, model)
        if index is None:
            return Route(None, model)
        self.guard.check_index(who, index)
        served = await self._served_indexes()
        if index not in served:
            raise ModelNotFound(f"no index {index!r} is served", param="model" if turn.search is None else "index")
        return Route(index, model, served[index]["version"])

    def _search(self, turn: Turn, route: Route, question: str) -> SearchRequest:
        if turn.search is not None:
            return turn.search.model_copy(update={"query": question})
        return SearchRequest(query=question, index=route.index)

    def _generation(
        self, turn: Turn, messages: list[Message] | None, *, prompt: str | None = None,
        grounded: Grounding | None = None, route: Route,
    ) -> GenerationRequest:  # fmt: skip
        limit = turn.max_tokens or self.config.default_max_tokens
        if limit > self.config.max_tokens_cap:
            raise LimitExceeded(
                f"max_tokens {limit} is over the limit of {self.config.max_tokens_cap}", param="max_tokens"
            )
        if self.config.telemetry.log_prompts:  # debug only: prompts may hold personal data
            log.info("prompt of %s: %s", turn.rid, messages or prompt)
        allowed = None if route.generator is not None else turn.who.model_scope
        return GenerationRequest(
            messages=messages, prompt=prompt if messages is None else None, max_tokens=limit,
            temperature=turn.temperature, request_id=turn.rid, allowed_models=allowed,
            context=_context(grounded), **turn.sampling,
        )  # fmt: skip

    # -- the whole answer ------------------------------------------------------------------------

    async def answer(self, turn: Turn) -> Outcome:
        """Plan, then the cached answer or a generated, graded and screened one; always settled."""
        plan = await self.plan(turn)
        outcome: Outcome | None = None
        try:
            if plan.probe is not None and plan.probe.hit is not None:
                outcome = self._from_cache(plan)
            else:
                answer = await self._answer(plan)
                plan.produced = answer.result.usage
                result = self.guard.screen_result(answer.result)
                outcome = Outcome(turn.rid, result, self._extra(plan, answer.grounded, answer.grades),
                                  cache_missed=plan.probe is not None, context=_context(answer.grounded))  # fmt: skip
            return outcome
        finally:
            self._settle(plan, outcome)

    async def _answer(self, plan: Plan) -> Answer:
        """Generate; with graders on, grade, and when the answer is not grounded regenerate once with
        the strict prompt and more context (within the retriever's `max_top_k`), keeping both verdicts."""
        generation, generator = plan.generation, plan.route.generator
        ALLOWED_MODELS.set(generation.allowed_models)  # the LLM judge answers within the key's models too
        result = await self._generate(generation, generator)
        if not self._graded(plan):
            return Answer(result, plan.grounded)
        plan.produced = result.usage
        first = await self._grade(plan, result, plan.grounded)
        settings = self.config.graders
        if first["groundedness"].passed or not settings.regenerate:
            return Answer(result, plan.grounded, grades_summary(first, None))
        wider = math.ceil(len(plan.grounded.result.chunks) * settings.context_factor)
        search = plan.search.model_copy(update={"top_k": min(wider, self.max_top_k)})
        chars = int(self.config.max_context_chars * settings.context_factor)
        conversation = [m for m in generation.messages if m.role != "system"]
        retry = await self.ground(conversation, search, settings.strict_prompt, max_chars=chars)
        try:
            second = await self._generate(_regrounded(generation, retry), generator)
        except InvalidRequest:  # the wider context does not fit this model: keep the first answer, marked
            return Answer(result, plan.grounded, grades_summary(first, None))
        second = second.model_copy(update={"usage": result.usage + second.usage})
        plan.produced = second.usage
        return Answer(second, retry, grades_summary(first, await self._grade(plan, second, retry)))

    def grounding(self, plan: Plan) -> dict[str, Any] | None:
        """What a stream can tell before its first token: the index, its version, the prompt and the
        citations of the passages the answer is grounded on (a cache hit's come with its answer)."""
        return self._extra(plan, plan.grounded) if plan.grounded is not None else None

    def _extra(self, plan: Plan, grounded: Grounding | None, grades: dict | None = None) -> dict[str, Any]:
        extra = rag_extra(grounded, self.config) if grounded is not None else {}
        if plan.followup is not None and plan.followup.by != "message":  # what a follow-up was searched with
            shown = plan.followup.query
            if plan.followup.by == "model" and self.guard.guardrails.screen_output(shown):
                shown = None  # a rewrite the output screen stops is searched with, never shown
            extra["query"] = {"text": shown, "by": plan.followup.by}
        return extra | ({"grades": grades} if grades is not None else {})

    def _from_cache(self, plan: Plan) -> Outcome:
        """The cached answer under this request's id, charged as configured (`cache.charge_hits`)."""
        cached, similarity = plan.probe.hit
        result = GenerationResult.model_validate(cached["result"])
        result = result.model_copy(update={"steps": ["cache: hit"]})
        if self.config.cache.charge_hits:
            plan.produced = result.usage
        extra = cached["extra"] | {"cache": {"hit": True, "similarity": round(similarity, 4)}}
        return Outcome(plan.turn.rid, result, extra, cache_similarity=similarity)

    # -- the streamed answer ---------------------------------------------------------------------

    async def stream(self, plan: Plan) -> AsyncIterator[Delta | Outcome]:
        """Deltas as they are generated (output screened on the text so far: the stream stops at the
        first offending delta with `content_filter`), then the `Outcome`. Settled whatever ends it.
        Takes the `Plan` so a transport can refuse a request (`plan`) before its stream starts."""
        outcome: Outcome | None = None
        try:
            if plan.probe is not None and plan.probe.hit is not None:
                outcome = self._from_cache(plan)
                for choice in outcome.result.choices:
                    yield Delta(index=choice.index, text=choice.text, finish_reason=choice.finish_reason)
            else:
                async with aclosing(self._stream_generated(plan)) as events:
                    async for event in events:
                        if isinstance(event, Outcome):
                            outcome = event
                        else:
                            yield event
            yield outcome
        finally:
            self._settle(plan, outcome)

    async def _stream_generated(self, plan: Plan) -> AsyncIterator[Delta | Outcome]:
        texts: dict[int, str] = {}
        finish: dict[int, str | None] = {}
        usage, steps, backend = Usage(), [], ""
        upstream = self.router.stream(plan.generation, plan.route.generator)
        try:
            async for delta in upstream:
                backend = delta.backend or backend
                if delta.usage is not None:  # the engine's own count, exact: replaces the running one
                    usage, steps = delta.usage, delta.steps
                    break
                usage = Usage(prompt_tokens=delta.prompt_tokens or usage.prompt_tokens,
                              completion_tokens=usage.completion_tokens + delta.tokens)  # fmt: skip
                plan.produced = usage
                texts[delta.index] = texts.get(delta.index, "") + delta.text
                finish[delta.index] = delta.finish_reason
                if self.guard.guardrails.screen_output(texts[delta.index]):  # stop before more of it is sent
                    finish[delta.index] = "content_filter"
                    texts[delta.index] = ""
                    yield Delta(index=delta.index, finish_reason="content_filter", backend=delta.backend)
                    break
                yield delta
        finally:
            await self.router.close(upstream)
        plan.produced = usage
        choices = [{"index": i, "text": texts[i], "finish_reason": finish[i] or "stop"} for i in sorted(texts)]
        result = GenerationResult(model=plan.route.generator or backend, backend=backend, choices=choices,
                                  usage=usage, steps=steps)  # fmt: skip
        grades = await self._grade_stream(plan, result)
        yield Outcome(plan.turn.rid, result, self._extra(plan, plan.grounded, grades), context=_context(plan.grounded))

    async def _grade_stream(self, plan: Plan, result: GenerationResult) -> dict[str, Any] | None:
        """A streamed grounded answer's verdicts, once it has ended: its tokens are already sent, so it
        is graded (in its last chunk and its record) but never regenerated; a withheld one is not graded."""
        if not self._graded(plan) or not result.choices:
            return None
        if any(c.finish_reason == "content_filter" for c in result.choices):
            return None
        ALLOWED_MODELS.set(plan.generation.allowed_models)  # the LLM judge answers within the key's models too
        return grades_summary(await self._grade(plan, result, plan.grounded), None)

    def _graded(self, plan: Plan) -> bool:
        """Graders on, a grounded answer, and free text (a JSON-mode answer is checked by its schema)."""
        return plan.grounded is not None and self.graders is not None and plan.generation.response_format is None

    # -- after generation ------------------------------------------------------------------------

    def _settle(self, plan: Plan, outcome: Outcome | None) -> None:
        """Account → record → remember → cache store. Accounting always runs for what was produced
        (disconnect, content filter, a failing later stage); the rest needs a finished answer."""
        turn = plan.turn
        if plan.produced is not None:
            model = outcome.result.model if outcome is not None else (plan.route.generator or "unknown")
            self._account(turn.who, plan.produced, model, plan.generation)
        rewrite = plan.followup
        if rewrite is not None and rewrite.usage.total_tokens:  # the follow-up's rewrite, by its own model
            self._account(turn.who, rewrite.usage, rewrite.model or "unknown", None)
        for usage, model in plan.judged:  # the llm judge's verdicts, by the model that gave them
            self._account(turn.who, usage, model, None)
        if outcome is None:
            return
        self._record(turn, outcome, plan.generation)
        if plan.asked is not None:
            self.conversations.save_turn(turn.who, turn.session_id, plan.asked, outcome.text)
        probe = plan.probe
        if probe is not None and probe.hit is None and outcome.cacheable:
            entry = {"result": outcome.result.model_dump(), "extra": outcome.extra}
            self.cache.store(probe.partition, plan.route.index, probe.version, probe.question, probe.vector, entry)

    async def _cache_probe(
        self, turn: Turn, route: Route, messages: list[Message], search: SearchRequest
    ) -> CacheProbe | None:
        """Look the question up in the semantic cache; None when the cache does not apply (off, or a
        multi-turn conversation, whose answer depends on more than the question). A repeat is found by
        its text without embedding; otherwise the question is embedded once and retrieval reuses it."""
        if self.cache is None or sum(m.role != "system" for m in messages) != 1:
            return None
        question = question_of(messages)
        self.cache.observe_version(route.index, route.version)
        partition = self._partition(turn, route, search)
        if (same := self.cache.lookup_exact(partition, question)) is not None:
            self._count_lookup(True)
            return CacheProbe(partition, route.version, question, None, (same, 1.0))
        with stage("embed_query"):
            vector = (await self._embed([question]))[0]
        hit = self.cache.lookup(partition, vector)
        self._count_lookup(hit is not None)
        return CacheProbe(partition, route.version, question, vector.tolist(), hit)


def _context(grounded: Grounding | None) -> list[str]:
    return [c.text for c in grounded.chunks] if grounded is not None else []


def _regrounded(generation: GenerationRequest, grounded: Grounding) -> GenerationRequest:
    return generation.model_copy(update={"messages": grounded.messages, "context": _context(grounded)})
