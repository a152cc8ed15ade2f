"""When an index job re-embeds everything: a changed embedder, chunker or backend, never an upgrade."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from indexes.embedder import EmbedderSpec
from pipelines.config import IndexJobConfig
from pipelines.index_job import decide_rebuild

pytestmark = pytest.mark.unit

SPEC = EmbedderSpec(model="all-MiniLM-L6-v2", dim=384, normalize=True, max_seq_length=256)


def previous(config: IndexJobConfig, **chunker_changes):
    chunker = config.chunker.model_dump() | chunker_changes
    return SimpleNamespace(embedder=SPEC, chunker=chunker, backend=config.backend.model_dump())


def test_a_chunker_setting_added_since_the_last_build_reads_as_its_default():
    config = IndexJobConfig()
    built_before = previous(config)
    del built_before.chunker["contextual"]  # a manifest written before the setting existed
    assert not decide_rebuild(built_before, SPEC, config, requested=False).full
    contextual = config.model_copy(update={"chunker": config.chunker.model_copy(update={"contextual": True})})
    decision = decide_rebuild(built_before, SPEC, contextual, requested=False)
    assert decision.full and "contextual: False -> True" in decision.reason


def test_an_index_embedded_without_leads_is_rebuilt_with_them():
    """`lead_chars` changes every stored vector, so a manifest written before it existed (its chunks
    were embedded alone) reads as built without, and the job re-embeds; with leads off it does not."""
    config = IndexJobConfig()
    built_before = previous(config)
    del built_before.chunker["lead_chars"]
    decision = decide_rebuild(built_before, SPEC, config, requested=False)
    assert decision.full and "lead_chars: None -> 350" in decision.reason
    off = config.model_copy(update={"chunker": config.chunker.model_copy(update={"lead_chars": None})})
    assert not decide_rebuild(built_before, SPEC, off, requested=False).full
    assert not decide_rebuild(previous(config), SPEC, config, requested=False).full


def test_an_index_whose_leads_were_embedded_alone_is_rebuilt_with_pooled_ones():
    """A manifest written before `lead_pooling` embedded its leads alone: it reads as `separate` (the
    default, no rebuild), and pooling leads in context changes every stored vector, so the job re-embeds;
    without leads the setting shapes nothing and it does not."""
    config = IndexJobConfig()
    built_before = previous(config)
    del built_before.chunker["lead_pooling"]
    assert config.chunker.lead_pooling == "separate"
    assert not decide_rebuild(built_before, SPEC, config, requested=False).full
    pooled = config.model_copy(update={"chunker": config.chunker.model_copy(update={"lead_pooling": "context"})})
    decision = decide_rebuild(built_before, SPEC, pooled, requested=False)
    assert decision.full and "lead_pooling: 'separate' -> 'context'" in decision.reason
    plain = pooled.model_copy(update={"chunker": pooled.chunker.model_copy(update={"lead_chars": None})})
    plain_before = previous(plain)
    del plain_before.chunker["lead_pooling"]
    assert not decide_rebuild(plain_before, SPEC, plain, requested=False).full


def _with_backend(**backend):
    return IndexJobConfig.model_validate({"backend": backend})


def test_an_upgrade_that_adds_backend_settings_rebuilds_only_an_index_they_shape():
    """A flat index built before IVF-PQ's sizing and refine existed (its manifest says nlist 64,
    nprobe 8, and nothing of refine) is not re-embedded for them; an IVF-PQ index is, since they
    change what it holds (it was built without re-scoring, whatever the default says now)."""
    old_defaults = {"nlist": 64, "nprobe": 8, "refine": None, "refine_candidates": None}
    for index_type, rebuilt in (("flat", False), ("hnsw", False), ("ivf_pq", True)):
        config = _with_backend(kind="faiss", index_type=index_type)
        built = previous(config)
        built.backend = {k: v for k, v in built.backend.items() if k not in ("refine", "refine_candidates")}
        built.backend |= {k: v for k, v in old_defaults.items() if v is not None}
        decision = decide_rebuild(built, SPEC, config, requested=False)
        assert decision.full is rebuilt, (index_type, decision.reason)
    decision = decide_rebuild(built, SPEC, _with_backend(kind="faiss", index_type="ivf_pq", nlist=64, nprobe=8),
                              requested=False)  # fmt: skip
    assert decision.full and "refine: None -> 'fp16'" in decision.reason  # built without re-scoring
    same = _with_backend(kind="faiss", index_type="ivf_pq", nlist=64, nprobe=8, refine=None, refine_candidates=1000)
    assert not decide_rebuild(built, SPEC, same, requested=False).full
