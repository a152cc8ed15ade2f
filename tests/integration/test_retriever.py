"""The retriever in-process on a real index: embedder checks, reranking, hot reload."""

from __future__ import annotations

import asyncio

import pytest

from indexes.config import IndexesConfig
from indexes.embedder import EmbedderConfig
from pipelines.stages import chunk_vectors
from serving.config import RerankerConfig, RetrieverConfig, SearchCoalescing
from serving.errors import InvalidRequest, unwrap
from serving.flow_support import HandleRetriever
from serving.protocol import SearchRequest
from serving.retriever import EmbedderMismatch, Retriever
from tests.conftest import write_corpus
from tests.integration.conftest import job_config, run_job
from tests.integration.serving_support import NEW_DOC, make_corpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("retriever")
    corpus = make_corpus(root)
    config = job_config(root)
    run_job(config, corpus)
    return config, corpus


def retriever(config, embedder: EmbedderConfig | None = None, **updates) -> Retriever:
    store = config.indexes if embedder is None else config.indexes.model_copy(update={"embedder": embedder})
    return Retriever(RetrieverConfig(indexes=["test"], reload_interval_s=3600, **updates), store)


def search(r: Retriever, **fields):
    return asyncio.run(r.search(SearchRequest(index="test", **fields)))


def test_an_index_built_with_another_embedder_is_refused(built):
    config, _ = built
    with pytest.raises(EmbedderMismatch, match="normalize"):
        retriever(config, embedder=EmbedderConfig(normalize=False))


def test_rerank_orders_candidates_by_the_rerankers_scores(built):
    """The rerank mode's plumbing against a reranker whose scores are known (tests/fakes.py): the
    candidates come back in the order of those scores, with them, and without rerank as they were."""
    from tests.fakes import KeywordReranker

    config, _ = built
    query = "tides of the moon and bread"
    r = Retriever(RetrieverConfig(indexes=["test"], reload_interval_s=3600, fetch_k=5), config.indexes,
                  reranker=KeywordReranker())  # fmt: skip
    try:
        result = search(r, query=query, top_k=3)
        plain = search(r, query=query, top_k=3, rerank=False)
    finally:
        r.close()
    known = KeywordReranker().predict([(query, c.text) for c in result.chunks])
    assert result.reranked and not plain.reranked
    assert [c.score for c in result.chunks] == known == sorted(known, reverse=True)
    assert result.chunks[0].source == "tides.md"  # holds "tides", "of", "the", "moon", "and"


def test_a_real_cross_encoder_loads_and_scores_through_the_rerank_mode(built, cross_encoder_dir):
    """The packaged path: a CrossEncoder directory in the config is loaded and used (its head is
    random, no reranker ships in a package here, so only that it runs is checked, not its order)."""
    config, _ = built
    r = retriever(config, reranker=RerankerConfig(model=cross_encoder_dir), fetch_k=5)
    try:
        result = search(r, query="what is lava?", top_k=3)
    finally:
        r.close()
    assert result.reranked and len(result.chunks) == 3


def test_rerank_without_a_reranker_is_a_client_error(built):
    config, _ = built
    r = retriever(config)
    try:
        with pytest.raises(InvalidRequest, match="reranker"):
            search(r, query="lava", rerank=True)
    finally:
        r.close()


def test_new_version_is_swapped_in_and_the_old_one_kept_for_in_flight(built):
    config, corpus = built
    r = retriever(config, close_grace_s=3600)
    try:
        before = r.loaded["test"]
        write_corpus(corpus, NEW_DOC)
        run_job(config, corpus)
        assert r.reload_if_changed("test") and not r.reload_if_changed("test")
        # a request that took the old version before the swap still gets answers from it (its content)
        old = before.index.search(r.embedder.encode(["glacier ice"]), 3)[0]
        assert old and "glaciers.md" not in {hit.chunk.source for hit in old}
        assert search(r, query="glacier ice", top_k=1).chunks[0].source == "glaciers.md"
    finally:
        r.close()


def test_a_plain_dense_search_reads_only_the_chunks_it_returns(built):
    """`fetch_k` candidates are for what reorders or drops them (fusion, MMR, rerank, caps); a plain
    dense search reads its top_k chunks from the store, not fetch_k of them."""
    config, _ = built
    r = retriever(config, fetch_k=30)
    read: list[int] = []
    store = r.loaded["test"].index.store
    get = store.get
    store.get = lambda ids: read.append(len(ids)) or get(ids)
    try:
        dense = search(r, query="what is lava?", top_k=2, mode="dense")
        search(r, query="what is lava?", top_k=2, mode="mmr")
    finally:
        r.close()
    assert dense.chunks[0].source == "volcanoes.md" and len(dense.chunks) == 2
    assert read[0] == 2 and read[1] > 2  # MMR diversifies over every candidate it was given


class CountingRetriever(Retriever):
    """The retriever deployment with its embedder's `encode` calls counted (batch sizes)."""

    def __init__(self, config: RetrieverConfig, store: IndexesConfig) -> None:
        super().__init__(config, store)
        self.batches: list[int] = []
        encode = self.embedder.encode

        def counted(texts, **kwargs):
            self.batches.append(len(texts))
            return encode(texts, **kwargs)

        self.embedder.encode = counted

    async def encode_batches(self) -> list[int]:
        return self.batches


def test_concurrent_searches_are_encoded_in_one_batch_and_a_lone_one_never_waits(built):
    """Eight searches in flight at once on one replica cost one encode call of eight queries; a
    search alone in the replica is encoded at once, though the batch may wait an hour to fill."""
    from ray import serve

    from tests.integration.serving_support import free_port

    config, _ = built
    settings = RetrieverConfig(indexes=["test"], reload_interval_s=3600,
                               batch={"max_size": 8, "wait_s": 3600.0}, deployment={"num_cpus": 0})  # fmt: skip
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    deployment = serve.deployment(CountingRetriever, name="retriever").options(**settings.deployment.serve_options())
    handle = serve.run(deployment.bind(settings, config.indexes), name="batching", route_prefix=None)
    try:
        questions = ["what is lava?", "how is bread leavened?", "what causes tides?", "spring tides", "magma",
                     "sourdough starter", "neap tides", "Mount Fuji"]  # fmt: skip
        burst = [SearchRequest(query=q, index="test", top_k=1) for q in questions]  # in flight together
        sources = [r.chunks[0].source for r in handle.search_many.remote(burst, [None] * 8).result()]
        alone = handle.search.remote(SearchRequest(query="what is lava?", index="test", top_k=1)).result(timeout_s=120)
        assert handle.encode_batches.remote().result() == [8, 1]  # not eight calls of one; the lone one not held
        assert sources[:3] == ["volcanoes.md", "sourdough.md", "tides.md"] and alone.chunks[0].source == sources[0]
    finally:
        serve.delete("batching")
        serve.shutdown()


class CallCountingRetriever(CountingRetriever):
    """... and the sizes of the `search_many` calls it gets (a gateway's coalesced searches)."""

    def __init__(self, config: RetrieverConfig, store: IndexesConfig) -> None:
        super().__init__(config, store)
        self.calls: list[int] = []

    async def search_many(self, requests, vectors):
        self.calls.append(len(requests))
        return await super().search_many(requests, vectors)

    async def handle_calls(self) -> tuple[list[int], list[int]]:
        return self.calls, self.batches


class Searcher:
    """A gateway stand-in: the flow's retriever port over the retriever's handle, in a replica."""

    def __init__(self, retriever, coalesce: SearchCoalescing | None) -> None:
        self.retriever = HandleRetriever(retriever, coalesce)

    async def search_all(self, requests: list[SearchRequest]) -> list[str]:
        async def one(request: SearchRequest) -> str:
            try:
                return (await self.retriever.search(request)).chunks[0].source
            except InvalidRequest as exc:
                return f"InvalidRequest: {unwrap(exc).param}"

        return list(await asyncio.gather(*map(one, requests)))

    async def retriever_calls(self) -> tuple[list[int], list[int]]:
        return await self.retriever.handle.handle_calls.remote()


def test_a_gateways_concurrent_searches_share_one_handle_call(built):
    """Eight searches in flight at once in a gateway replica reach the retriever as one
    `search_many` call (one actor hop, one encode); the one bad request among them fails alone."""
    from ray import serve

    from tests.integration.serving_support import free_port

    config, _ = built
    settings = RetrieverConfig(indexes=["test"], reload_interval_s=3600, max_top_k=10, deployment={"num_cpus": 0},
                               batch={"max_size": 7, "wait_s": 30.0})  # fmt: skip
    coalesce = SearchCoalescing(max_size=8, wait_s=30.0, in_flight=1)  # a full call leaves at once
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    retriever = serve.deployment(CallCountingRetriever, name="retriever").options(**settings.deployment.serve_options())
    searcher = serve.deployment(Searcher, name="searcher", ray_actor_options={"num_cpus": 0})
    handle = serve.run(searcher.bind(retriever.bind(settings, config.indexes), coalesce), name="coalescing",
                       route_prefix=None)  # fmt: skip
    try:
        questions = ["what is lava?", "how is bread leavened?", "what causes tides?", "spring tides", "magma",
                     "sourdough starter", "neap tides"]  # fmt: skip
        requests = [SearchRequest(query=q, index="test", top_k=1) for q in questions]
        requests.insert(3, SearchRequest(query="too many", index="test", top_k=11))
        sources = handle.search_all.remote(requests).result()
        assert sources[:4] == ["volcanoes.md", "sourdough.md", "tides.md", "InvalidRequest: top_k"]
        calls, encodes = handle.retriever_calls.remote().result()
        assert calls == [8]  # not eight `search` calls (without coalescing: none)
        assert encodes == [7]  # the bad request is refused before its query is encoded
    finally:
        serve.delete("coalescing")
        serve.shutdown()


def test_a_tampered_new_version_is_refused_and_the_served_one_kept(built):
    """A version whose files differ from its manifest (here: one byte added to the chunk store after
    the job wrote it) is not opened; the replica keeps serving the version it has and says why."""
    from indexes.layout import IndexDirectory

    config, corpus = built
    r = retriever(config)
    directory = IndexDirectory(config.indexes.root, "test")
    try:
        served = r.loaded["test"].version_id
        write_corpus(corpus, {"lagoons.md": "# Lagoons\n\nA lagoon is shallow water cut off from the sea by a reef.\n"})
        run_job(config, corpus)
        store = directory.versions_path / directory.current_version() / "chunks.sqlite"
        original = store.read_bytes()
        store.write_bytes(original + b"\0")
        assert not r.reload_if_changed("test")
        assert r.loaded["test"].version_id == served
        assert "refused" in r.errors["test"] and "chunks.sqlite differs" in r.errors["test"]
        assert search(r, query="what is lava?", top_k=1).chunks[0].source == "volcanoes.md"
        store.write_bytes(original)  # repaired: the same version is now accepted
        assert r.reload_if_changed("test") and "test" not in r.errors
    finally:
        r.close()


def test_an_index_built_with_torch_is_served_with_openvino(ray_cluster, tmp_path, sample_dir):
    """The backend is how vectors are computed, not what they mean: every chunk of the committed
    sample, embedded by torch in the job (with its lead), is its own nearest neighbour when embedded
    again by the OpenVINO query embedder, at cosine >= 0.9999, and the replica accepts the index
    (same embedder spec)."""
    config = job_config(tmp_path, **{"indexes.embedder.backend": "torch"})
    report = run_job(config, sample_dir)
    r = retriever(config, embedder=EmbedderConfig(backend="openvino"))  # the job embedded with torch
    try:
        version = r.loaded["test"].index
        chunks = list(version.store)
        places = [(c.text, c.title, c.section) for c in chunks]
        again = chunk_vectors(r.embedder, places, config.index_job.chunker)
        found, scores = version.vectors.search(again, 1)
        nearest = version.store.get([int(vid) for vid in found[:, 0]])
    finally:
        r.close()
    assert r.embedder.backend == "openvino" and len(chunks) == report.chunks.total > 30
    assert version.manifest.embedder == r.embedder.spec
    assert scores[:, 0].min() >= 0.9999
    assert [nearest[int(vid)].text for vid in found[:, 0]] == [c.text for c in chunks]


def test_mmr_diversifies_with_stored_vectors_and_embeds_only_the_query(built):
    config, _ = built
    r = retriever(config, fetch_k=3)
    encoded: list[int] = []
    encode = r.embedder.encode

    def counted(texts, *args, **kwargs):
        encoded.append(len(texts))
        return encode(texts, *args, **kwargs)

    r.embedder.encode = counted
    try:
        diverse = search(r, query="what is lava?", top_k=3, mode="mmr")
        dense = search(r, query="what is lava?", top_k=3, mode="dense")
    finally:
        r.close()
    assert encoded == [1, 1]  # one query each; the candidates' vectors come from the index
    assert {c.chunk_id for c in diverse.chunks} == {c.chunk_id for c in dense.chunks}  # 3 of 3: same set
    assert diverse.chunks[0].chunk_id == dense.chunks[0].chunk_id  # the most relevant first either way


def test_hybrid_fuses_by_weight_or_by_rank_and_each_extreme_weight_is_its_member(built):
    config, _ = built
    query = "starter of wild yeast"
    results = {}
    for name, updates in {"dense": {}, "dense-only": {"dense_weight": 1.0}, "bm25-only": {"dense_weight": 0.0},
                          "rrf": {"fusion": "rrf"}}.items():  # fmt: skip
        r = retriever(config, **updates)
        try:
            mode = "dense" if name == "dense" else "hybrid"
            results[name] = [c.chunk_id for c in search(r, query=query, top_k=3, mode=mode).chunks]
            if name == "bm25-only":
                results["bm25"] = [c.chunk_id for c in search(r, query=query, top_k=3, mode="bm25").chunks]
        finally:
            r.close()
    assert results["dense-only"][: len(results["dense"])] == results["dense"]
    assert results["bm25-only"][: len(results["bm25"])] == results["bm25"]
    assert results["rrf"][0] in results["dense"] + results["bm25"]


def test_a_contextual_index_finds_a_chunk_by_its_title_in_bm25_and_cites_the_plain_text(ray_cluster, tmp_path):
    """The History section never names the mountain; indexed after "Mount Fuji > History" it is found
    by that name, and the text it cites is still its own."""
    doc = "# Mount Fuji\n\nThe highest mountain of Japan, on Honshu.\n\n## History\n\nIt last erupted in 1707.\n"
    corpus = write_corpus(tmp_path / "corpus", {"fuji.md": doc})
    for contextual in (False, True):
        config = job_config(tmp_path / str(contextual), **{"index_job.chunker.contextual": contextual,
                                                           "index_job.chunker.min_chars": 5})  # fmt: skip
        run_job(config, corpus)
        r = retriever(config)
        try:
            found = search(r, query="Fuji", top_k=5, mode="bm25").chunks
        finally:
            r.close()
        history = [c for c in found if c.section == "History"]
        if contextual:
            assert history and history[0].text.startswith("History") and "Fuji" not in history[0].text
        else:
            assert found and not history  # only the intro, whose text holds the name


@pytest.fixture(scope="module")
def windowed(ray_cluster, tmp_path_factory):
    """The test corpus in 120-character windows: every section is cut into several chunks."""
    root = tmp_path_factory.mktemp("windowed")
    config = job_config(root, **{"index_job.chunker.size": 120, "index_job.chunker.overlap": 20})
    run_job(config, make_corpus(root))
    return config


def test_a_section_cap_keeps_one_chunk_per_section(windowed):
    """Small windows cut each section into several chunks; capped, a result names each section once."""
    config = windowed
    capped, plain = retriever(config, max_per_section=1), retriever(config)
    try:
        got = search(capped, query="lava and bread and tides", top_k=10).chunks
        every = search(plain, query="lava and bread and tides", top_k=10).chunks
    finally:
        capped.close()
        plain.close()
    sections = [(c.source, c.section) for c in got]
    assert len(sections) == len(set(sections)) == len({(c.source, c.section) for c in every})
    assert len(every) > len(got)  # uncapped, one section fills several places


def test_small_to_big_hands_on_whole_sections_once_each(windowed):
    config = windowed
    grown, small = retriever(config, expand="section"), retriever(config, expand="section", max_section_chars=50)
    try:
        sections = search(grown, query="sourdough starter", top_k=3).chunks
        chunks = search(small, query="sourdough starter", top_k=3).chunks
    finally:
        grown.close()
        small.close()
    assert sections[0].source == "sourdough.md" and "Dutch oven" in sections[0].text and "leavened" in sections[0].text
    assert len({(c.source, c.section) for c in sections}) == len(sections)  # each section handed on once
    assert all(len(c.text) <= 120 for c in chunks)  # sections over max_section_chars stay chunks
