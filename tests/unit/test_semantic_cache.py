"""The semantic cache with the real MiniLM embedder: paraphrases hit, other partitions and versions miss."""

from __future__ import annotations

import pytest

from indexes.embedder import EmbedderConfig, load_embedder
from serving.config import CacheConfig
from serving.stores.cache import SemanticCache, partition_key

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def embed():
    embedder = load_embedder(EmbedderConfig())
    return lambda text: embedder.encode([text])[0]


def test_paraphrase_hits_within_its_partition_only(tmp_path, embed):
    cache = SemanticCache(CacheConfig(enabled=True, path=tmp_path / "cache.sqlite", threshold=0.9))
    part = partition_key(
        tenant="acme", index="docs", version="v1", prompt="rag_answer@1", model="rag:docs", max_tokens=16
    )
    cache.store(
        part, "docs", "v1", "How do I read a CSV file?", embed("How do I read a CSV file?"), {"answer": "csv.reader"}
    )
    hit = cache.lookup(part, embed("how do i read a csv file"))
    assert hit is not None and hit[0] == {"answer": "csv.reader"} and hit[1] > 0.9
    assert cache.lookup(part, embed("What is a volcano?")) is None
    other = partition_key(
        tenant="acme", index="docs", version="v1", prompt="rag_answer@1", model="rag:docs", max_tokens=32
    )
    assert other != part and cache.lookup(other, embed("How do I read a CSV file?")) is None
    assert cache.lookup_exact(part, "How do I read a CSV file?") == {"answer": "csv.reader"}  # no embedding
    assert cache.lookup_exact(part, "how do i read a csv file") is None
    assert cache.lookup_exact(other, "How do I read a CSV file?") is None


def test_a_new_index_version_drops_the_old_entries(tmp_path, embed):
    cache = SemanticCache(CacheConfig(enabled=True, path=tmp_path / "cache.sqlite"))
    vector = embed("lava")
    assert cache.observe_version("docs", "v1") == 0
    cache.store("p1", "docs", "v1", "lava", vector, {"a": 1})
    cache.store("p2", "other", "v7", "lava", vector, {"a": 2})
    assert cache.observe_version("docs", "v1") == 0
    assert cache.observe_version("docs", "v2") == 1
    assert cache.lookup("p1", vector) is None and cache.lookup("p2", vector) is not None


def test_entries_expire(tmp_path, embed):
    now = [1_000.0]
    cache = SemanticCache(CacheConfig(enabled=True, path=tmp_path / "cache.sqlite", ttl_s=60), clock=lambda: now[0])
    cache.store("p", "docs", "v1", "lava", embed("lava"), {"a": 1})
    assert cache.lookup_exact("p", "lava") is not None
    now[0] += 61  # past the TTL: an injected clock, no waiting
    assert cache.lookup("p", embed("lava")) is None and cache.lookup_exact("p", "lava") is None
