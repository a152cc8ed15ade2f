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
