"""The retriever: the CURRENT version of each served index, searched four ways; a deployment of its
own, or opened inside each gateway replica (`serve.retriever.placement`).

A background thread polls each index's `CURRENT` pointer; a new version is opened off the request
path, checked against this replica's embedder, and swapped in by one reference assignment.
Requests already holding the old version finish on it; it is closed after a grace period. So a
reindex never drops a query, and a version built with another embedder is refused (the old one
keeps serving) instead of answering with meaningless neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.exceptions import RayServeException

from core.offline import ensure_offline
from indexes.config import IndexesConfig
from indexes.embedder import Embedder, load_embedder
from indexes.layout import IndexNotFoundError, TamperedIndexError
from indexes.manifest import Manifest, verify_files
from indexes.reader import Hit, IndexVersion
from indexes.storage import IndexLocation, index_names, locate
from indexes.store import indexed_text, sections
from serving.config import LexicalConfig, RetrieverConfig
from serving.errors import InvalidRequest, NotFound, ServingError
from serving.protocol import DocumentResult, Passage, PassageResult, ScoredChunk, SearchRequest, SearchResult
from serving.ranking import LexicalIndex, cap_per_section, matches, mmr, rrf_fuse, weighted_fuse
from serving.telemetry import metrics
from serving.telemetry.quiet import quiet_polls

log = logging.getLogger(__name__)


RERANK_BATCH = 32  # an injected reranker's batch size (a configured one has its own)


class EmbedderMismatch(ServingError):
    """The index's vectors were made by another embedder than the one this replica loads."""


@dataclass
class Loaded:
    """An open index version plus its lexical index, built on first hybrid/BM25 use."""

    version_id: str
    index: IndexVersion
    lock: threading.Lock = field(default_factory=threading.Lock)

    bm25: LexicalConfig = field(default_factory=LexicalConfig)
    _lexical: LexicalIndex | None = None

    @property
    def lexical(self) -> LexicalIndex:
        """BM25 over the text the index embedded (with title and section when built contextual), built
        once: by a warming thread when the configured mode uses it, or by the first query that does."""
        with self.lock:
            if self._lexical is None:
                contextual = bool(self.index.manifest.chunker.get("contextual", False))
                chunks = list(self.index.store)
                texts = [indexed_text(c.text, c.title, c.section, contextual) for c in chunks]
                self._lexical = LexicalIndex([c.vid for c in chunks], texts, self.bm25.stemmer, self.bm25.stopwords)
            return self._lexical


class Retriever:
    """Embeds queries and ranks chunks of the served indexes; also the gateway's embedder."""

    def __init__(
        self, config: RetrieverConfig, store: IndexesConfig, embedder: Embedder | None = None, reranker: Any = None
    ) -> None:
        ensure_offline()
        quiet_polls()
        self.config, self.store = config, store
        self.embedder = embedder or load_embedder(store.embedder)
        self.reranker = reranker if reranker is not None else _load_reranker(config, store.embedder.device)
        self._batched = in_replica()  # serve.batch needs a replica; in-process users (evaluation) encode alone
        self._searching = 0  # searches in this process now: a lone one never waits for a batch to fill
        if self._batched:
            self._encode_queries.set_max_batch_size(config.batch.max_size)
            self._encode_queries.set_batch_wait_timeout_s(config.batch.wait_s)
        self.errors: dict[str, str] = {}
        self._refused: dict[str, str] = {}  # discovered index -> the version it could not be served at
        self.loaded: dict[str, Loaded] = {name: self._open(name) for name in config.indexes}
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="index-watcher", daemon=True)
        self._watcher.start()

    def _open(self, name: str) -> Loaded:
        location = self._location(name)
        version_id = location.current_version()
        if version_id is None:
            raise IndexNotFoundError(f"index {name!r} has no published version at {location.describe()}")
        path = location.local_path(version_id)
        _verify(name, version_id, path)
        index = IndexVersion(path, self.config.qdrant)
        if index.manifest.embedder != self.embedder.spec:
            index.close()
            raise EmbedderMismatch(
                f"index {name!r} version {version_id} was embedded with {index.manifest.embedder.model_dump()}, "
                f"this retriever embeds with {self.embedder.spec.model_dump()}"
            )
        loaded = Loaded(version_id, index, bm25=self.config.bm25)
        if self.config.mode in ("hybrid", "bm25"):  # the default mode's BM25 built now, not by a query
            threading.Thread(target=_warm, args=(name, loaded), name="bm25-warm", daemon=True).start()
        return loaded

    def _location(self, name: str) -> IndexLocation:
        return locate(self.store.root, name, self.config.cache_dir)

    # -- reloading -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            for name in list(self.loaded):
                self.reload_if_changed(name)
            if self.config.discover:
                self.discover()

    def discover(self) -> None:
        """Serve indexes published under the root since start (created over HTTP), up to
        `max_indexes` in all, and stop serving a discovered one whose CURRENT is gone (dropped).
        `loaded` is replaced, never resized in place: requests read it while this thread writes."""
        try:
            found = set(index_names(self.store.root))
        except Exception as exc:  # noqa: BLE001 - an unlistable root keeps what is served
            log.warning("index discovery under %s failed: %r", self.store.root, exc)
            return
        for name in sorted(found - set(self.loaded)):
            if len(self.loaded) >= self.config.max_indexes:
                log.warning("not serving index %s: serve.retriever.max_indexes (%d) reached", name, len(self.loaded))
                break
            current = self._location(name).current_version()
            if current is None or self._refused.get(name) == current:
                continue  # dropped meanwhile, or this version was already refused
            try:
                self.loaded = {**self.loaded, name: self._open(name)}
                log.info("index %s: discovered, serving version %s", name, current)
            except Exception as exc:  # noqa: BLE001 - one bad index must not stop the others
                self._refused[name] = current
                self.errors[name] = f"version {current} not served: {exc}"
                log.error("index %s: %s", name, self.errors[name])
        for name in set(self.loaded) - found - set(self.config.indexes):
            gone = self.loaded[name]
            self.loaded = {n: lo for n, lo in self.loaded.items() if n != name}
            closer = threading.Timer(self.config.close_grace_s, gone.index.close)
            closer.daemon = True
            closer.start()
            log.info("index %s: dropped from the root, no longer served", name)

    def reload_if_changed(self, name: str) -> bool:
        """Swap in a newly published version of `name`; keep serving the old one if it cannot be used."""
        current = self._location(name).current_version()
        if current is None or current == self.loaded[name].version_id:
            return False
        try:
            fresh = self._open(name)
        except Exception as exc:  # noqa: BLE001 - a bad new version must not take the served one down
            self.errors[name] = f"version {current} refused: {exc}"
            log.error("index %s: %s", name, self.errors[name])
            return False
        old, self.loaded[name] = self.loaded[name], fresh
        self.errors.pop(name, None)
        metrics.index_version().set(0, {"index": name, "version": old.version_id})
        metrics.index_version().set(1, {"index": name, "version": fresh.version_id})
        closer = threading.Timer(self.config.close_grace_s, old.index.close)
        closer.daemon = True  # a pending close must not hold the process open at shutdown
        closer.start()
        log.info("index %s: now serving version %s (was %s)", name, fresh.version_id, old.version_id)
        return True

    def close(self) -> None:
        self._stop.set()
        for loaded in self.loaded.values():
            loaded.index.close()

    # -- serving ---------------------------------------------------------------------------------

    async def describe(self) -> dict[str, dict]:
        """Served indexes, their versions and chunk counts (for /v1/models and /readyz); the version
        gauge is set again here so it stays exported for as long as the version is served."""
        for name, loaded in self.loaded.items():
            metrics.index_version().set(1, {"index": name, "version": loaded.version_id})
        return {
            name: {
                "version": lo.version_id,
                "chunks": lo.index.vectors.count,
                "embedder": self.embedder.spec.model,
                "error": self.errors.get(name),
            }
            for name, lo in self.loaded.items()
        }

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors for `texts` and how many tokens they took (the usage of /v1/embeddings)."""

        def work() -> tuple[list[list[float]], int]:
            tokens = self.embedder.count_tokens(texts)
            return self.embedder.encode(texts).tolist(), tokens

        return await asyncio.to_thread(work)

    async def passage(self, index: str, chunk_id: str) -> PassageResult:
        """One chunk of `index`, whole: a citation's passage, opened."""
        loaded = self._served(index)
        chunk = await asyncio.to_thread(loaded.index.store.by_id, chunk_id)
        if chunk is None:
            raise NotFound(f"no chunk {chunk_id!r} in index {index!r} version {loaded.version_id}",
                           param="chunk_id", code="chunk_not_found")  # fmt: skip
        return PassageResult(index=index, version=loaded.version_id, passage=Passage.of(chunk))

    async def document(self, index: str, source: str) -> DocumentResult:
        """A source document as `index` holds it, section by section: read from the chunk store, never
        from the file system, so a client can open only what the index already serves."""
        loaded = self._served(index)
        limit = self.config.max_document_chunks
        parts = await asyncio.to_thread(loaded.index.store.document, source, limit + 1)
        if not parts:
            raise NotFound(f"no document {source!r} in index {index!r} version {loaded.version_id}",
                           param="source", code="document_not_found")  # fmt: skip
        return DocumentResult(
            index=index, version=loaded.version_id, source=source, title=parts[0].title,
            sections=[Passage.of(c) for c in sections(parts[:limit])], truncated=len(parts) > limit,
        )  # fmt: skip

    def _served(self, index: str) -> Loaded:
        loaded = self.loaded.get(index)
        if loaded is None:
            raise NotFound(f"index {index!r} is not served here", param="index", code="index_not_found")
        return loaded

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _encode_queries(self, queries: list[str]) -> list[np.ndarray]:
        """Concurrent searches' queries in one encode call (size and wait from `config.batch`), off the
        event loop: N queries in flight cost about one encode, and the loop keeps serving."""
        vectors = await asyncio.to_thread(self.embedder.encode, queries)
        return list(vectors)

    async def search(self, request: SearchRequest, vector: list[float] | None = None) -> SearchResult:
        """Rank chunks of `request.index`; `vector` is the query's embedding when the caller already
        has it (the gateway embeds a RAG question once, for the semantic cache and for this search)."""
        self._searching += 1
        try:
            return await self._search(request, vector)
        finally:
            self._searching -= 1

    async def _search(self, request: SearchRequest, vector: list[float] | None) -> SearchResult:
        """A search alone in this process is encoded and ranked at once, in one thread hop; one that
        finds others in flight meets them in `_encode_queries`, whose batch waits up to `batch.wait_s`
        to fill: under load, arrivals come further apart than one encode takes, and only a wait lets
        N of them share it. (`_searching` counts the searches in flight, `search_many`'s at once.)"""
        loaded = self._served(request.index)
        top_k = request.top_k or self.config.top_k
        if top_k > self.config.max_top_k:
            raise InvalidRequest(f"top_k {top_k} is over the limit of {self.config.max_top_k}", param="top_k")
        mode = request.mode or self.config.mode
        rerank = self._rerank_wanted(request)
        started = time.perf_counter()
        encode = mode != "bm25" and vector is None
        if encode and (not self._batched or self._searching == 1):
            hits = await asyncio.to_thread(self._encode_and_rank, loaded, request, mode, top_k, rerank)
        else:
            query = None
            if mode != "bm25":
                query = np.asarray([vector if vector is not None else await self._encode_queries(request.query)],
                                   dtype=np.float32)  # fmt: skip
            hits = await asyncio.to_thread(self._rank, loaded, request, mode, top_k, rerank, query)
        return SearchResult(
            index=request.index,
            version=loaded.version_id,
            mode=mode,
            reranked=rerank,
            took_ms=(time.perf_counter() - started) * 1000,
            chunks=[ScoredChunk.from_hit(hit) for hit in hits],
        )

    async def search_many(
        self, requests: list[SearchRequest], vectors: list[list[float] | None]
    ) -> list[SearchResult | Exception]:
        """Several searches in one call: a gateway sends its concurrent searches together, one handle
        hop for all (`HandleRetriever`), and their queries meet in one batched encode here. Each
        search's own error takes its place in the list, so one bad request fails only itself."""

        async def one(request: SearchRequest, vector: list[float] | None) -> SearchResult | Exception:
            try:
                return await self._search(request, vector)
            except Exception as exc:  # noqa: BLE001 - handed back to its own caller, raised there
                return exc

        self._searching += len(requests)  # in flight together from the start: none of them is alone
        try:
            return list(await asyncio.gather(*map(one, requests, vectors)))
        finally:
            self._searching -= len(requests)

    def _encode_and_rank(
        self, loaded: Loaded, request: SearchRequest, mode: str, top_k: int, rerank: bool
    ) -> list[Hit]:
        query = np.asarray(self.embedder.encode([request.query]), dtype=np.float32)
        return self._rank(loaded, request, mode, top_k, rerank, query)

    def _rank(
        self, loaded: Loaded, request: SearchRequest, mode: str, top_k: int, rerank: bool, query: np.ndarray | None
    ) -> list[Hit]:
        fetch = max(self.config.fetch_k, top_k)
        if mode == "dense" and not rerank and not self.config.max_per_section and self.config.expand == "chunk":
            fetch = top_k  # nothing after the dense ranker reorders or drops: read no chunk it would not return
        if mode == "bm25":
            candidates = self._lexical(loaded, request, fetch)
        elif mode == "hybrid":
            candidates = self._fuse(self._dense(loaded, request, query, fetch), self._lexical(loaded, request, fetch))
        else:
            candidates = self._dense(loaded, request, query, fetch)
        if mode == "mmr":
            candidates = self._diversify(loaded, query[0], candidates, top_k)
        if rerank:
            started = time.perf_counter()
            candidates = self._rerank(request.query, candidates)
            metrics.stage_seconds().observe(time.perf_counter() - started, {"stage": "rerank"})
        if self.config.max_per_section:
            kept = cap_per_section([h.chunk for h in candidates], self.config.max_per_section)
            candidates = [candidates[i] for i in kept]
        if self.config.expand == "section":
            return self._sections(loaded, candidates, top_k)
        return candidates[:top_k]

    def _sections(self, loaded: Loaded, hits: list[Hit], top_k: int) -> list[Hit]:
        """Each hit as its whole section when that fits `max_section_chars`; a section already handed
        on by a better hit is not handed on twice."""
        grown, seen = [], set()
        for hit in hits:
            key = (hit.chunk.source, hit.chunk.section)
            if key in seen:
                continue
            if len(grown) == top_k:
                break
            section = loaded.index.store.section_of(hit.chunk)
            if len(section.text) <= self.config.max_section_chars:
                seen.add(key)
                hit = Hit(section, hit.score)
            grown.append(hit)
        return grown

    def _filtered(self, request: SearchRequest, hits: list[Hit]) -> list[Hit]:
        return [h for h in hits if matches(h.chunk, request.source, request.section)]

    def _dense(self, loaded: Loaded, request: SearchRequest, query: np.ndarray, fetch: int) -> list[Hit]:
        """Nearest chunks; with a filter, search wider so `fetch` survivors remain when they exist."""
        count = loaded.index.vectors.count
        k = fetch if not (request.source or request.section) else min(count, max(fetch * 20, 500))
        hits = loaded.index.search(query, max(1, min(k, count)))[0]
        if hits:  # the out-of-distribution score: 1 - cosine of the query to its nearest chunk, before filters
            metrics.query_distance().observe(1.0 - float(hits[0].score), {"index": request.index})
        return self._filtered(request, hits)[:fetch]

    def _lexical(self, loaded: Loaded, request: SearchRequest, fetch: int) -> list[Hit]:
        widen = 1 if not (request.source or request.section) else 20
        pairs = loaded.lexical.search(request.query, fetch * widen)
        chunks = loaded.index.store.get([vid for vid, _ in pairs])
        hits = [Hit(chunks[vid], score) for vid, score in pairs if vid in chunks]
        return self._filtered(request, hits)[:fetch]

    def _fuse(self, dense: list[Hit], lexical: list[Hit]) -> list[Hit]:
        by_vid = {h.chunk.vid: h.chunk for h in dense + lexical}
        if self.config.fusion == "rrf":
            fused = rrf_fuse([[h.chunk.vid for h in dense], [h.chunk.vid for h in lexical]], k=self.config.rrf_k)
        else:
            weight = self.config.dense_weight
            fused = weighted_fuse([[(h.chunk.vid, h.score) for h in hits] for hits in (dense, lexical)],
                                  [weight, 1.0 - weight], window=self.config.fetch_k)  # fmt: skip
        return [Hit(by_vid[vid], score) for vid, score in fused]

    def _diversify(self, loaded: Loaded, query: np.ndarray, candidates: list[Hit], top_k: int) -> list[Hit]:
        """MMR over the candidates with their stored vectors: no embedding per query beyond the query's."""
        if not candidates:
            return []
        vectors = loaded.index.vectors.vectors(np.array([h.chunk.vid for h in candidates], dtype=np.int64))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # PQ codes: near unit
        order = mmr(query, vectors, top_k, self.config.mmr_lambda)
        return [candidates[i] for i in order]

    def _rerank_wanted(self, request: SearchRequest) -> bool:
        if request.rerank and self.reranker is None:
            raise InvalidRequest("rerank asked for but no reranker model is configured", param="rerank")
        return self.reranker is not None and request.rerank is not False

    def _rerank(self, query: str, candidates: list[Hit]) -> list[Hit]:
        if not candidates:
            return []
        scores = self.reranker.predict(
            [(query, h.chunk.text) for h in candidates],
            batch_size=self.config.reranker.batch_size if self.config.reranker else RERANK_BATCH,
            show_progress_bar=False,
        )
        order = np.argsort(-np.asarray(scores), kind="stable")
        return [Hit(candidates[i].chunk, float(scores[i])) for i in order]


def _verify(name: str, version_id: str, path: Path) -> None:
    """Every file of the version as its manifest lists it (size, SHA-256), checked before opening:
    embedded Qdrant and FAISS read their files as they are, so a changed file is refused, counted and
    logged, and the replica keeps serving what it has."""
    manifest = Manifest.load(path)
    if not manifest.files:
        log.warning("index %s version %s lists no file hashes (built before they were written): unverified",
                    name, version_id)  # fmt: skip
        return
    try:
        verify_files(path, manifest)
    except ValueError as exc:
        metrics.index_refusals().inc(1, {"index": name})
        raise TamperedIndexError(f"index {name!r} version {version_id} refused: {exc}") from None


def _warm(name: str, loaded: Loaded) -> None:
    """Build a version's BM25 ahead of its first query; a version closed meanwhile (swapped out, or
    the replica stopping) is no error: the query that needs BM25 would build it anyway."""
    try:
        _ = loaded.lexical  # built once and kept on the version
    except sqlite3.ProgrammingError:  # the chunk store closed under it
        log.debug("index %s version %s closed before its BM25 was built", name, loaded.version_id)


def in_replica() -> bool:
    """Whether this runs in a Serve replica (serve.batch needs one's event loop and context)."""
    try:
        serve.get_replica_context()
    except RayServeException:
        return False
    return True


def _load_reranker(config: RetrieverConfig, device: str):
    if config.reranker is None:
        return None
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(config.reranker.model), device=device)
