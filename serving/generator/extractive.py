"""The chain's last step: an answer quoted from the retrieved passages, with no model at all.

When every generator is down, a RAG request still has what retrieval found. This step ranks the
passages' sentences against the question with BM25 (`bm25s`, already the lexical ranker of the
retriever) and returns the best few, each cited by passage number, so the user gets the relevant
text instead of a 503. It applies only to grounded requests (it needs `context`) that do not ask
for JSON. Usage counts whitespace words: there is no tokenizer behind this step.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import bm25s

from serving.errors import NotReady
from serving.generator.protocol import Choice, Delta, GenerationRequest, GenerationResult, GeneratorStatus, Usage
from serving.rag import question_of

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n{2,}")


def sentences(passages: list[str]) -> list[tuple[int, str]]:
    """(passage number from 1, sentence) pairs; headings and fragments under four words dropped."""
    found = []
    for n, passage in enumerate(passages, start=1):
        for sentence in SENTENCE_END.split(passage):
            sentence = " ".join(sentence.split())
            if len(sentence.split()) >= 4 and not sentence.startswith("#"):
                found.append((n, sentence))
    return found


def extract(question: str, passages: list[str], count: int) -> str:
    """The `count` sentences that best match the question, in passage order, cited `[n]`."""
    candidates = sentences(passages)
    if not candidates:
        return ""
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([s for _, s in candidates], show_progress=False), show_progress=False)
    k = min(count, len(candidates))
    ids, scores = retriever.retrieve(bm25s.tokenize([question], show_progress=False), k=k, show_progress=False)
    picked = [int(i) for i, score in zip(ids[0], scores[0], strict=True) if score > 0] or list(range(k))
    return " ".join(f"{candidates[i][1]} [{candidates[i][0]}]" for i in sorted(picked))


class ExtractiveGenerator:
    """A Generator that quotes; always ready, never fails on server-side causes."""

    backend = model = "extractive"

    def __init__(self, sentences: int = 2) -> None:
        self.count = sentences

    @staticmethod
    def applies(request: GenerationRequest) -> bool:
        return bool(request.context) and request.response_format is None and request.messages is not None

    async def status(self) -> GeneratorStatus:
        return GeneratorStatus(backend=self.backend, model=self.model, ready=True)

    async def wait_ready(self, timeout_s: float) -> GeneratorStatus:
        return await self.status()  # nothing to load

    def _answer(self, request: GenerationRequest) -> tuple[str, Usage]:
        if not self.applies(request):
            raise NotReady("the extractive step answers grounded chat requests only")
        text = extract(question_of(request.messages), request.context, self.count)
        prompt_words = sum(len(m.content.split()) for m in request.messages)
        return text, Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split()))

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        text, usage = self._answer(request)
        choices = [Choice(index=i, text=text, finish_reason="stop") for i in range(request.n)]
        return GenerationResult(model=self.model, backend=self.backend, choices=choices, usage=usage)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        text, usage = self._answer(request)
        for index in range(request.n):
            yield Delta(index=index, text=text, finish_reason="stop", backend=self.backend)
        yield Delta(backend=self.backend, usage=usage)
