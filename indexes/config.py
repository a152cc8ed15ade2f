"""The `indexes:` section: where indexes live and what embeds them, shared by the index job, the
retriever and evaluation, so the writer and the readers cannot disagree on either."""

from __future__ import annotations

from core.strict import StrictModel
from indexes.embedder import EmbedderConfig
from indexes.storage import IndexRoot


class IndexesConfig(StrictModel):
    """`root` is a directory (shared by every node on a cluster) or a filesystem URI such as
    `s3://bucket/indexes`; `embedder` must be the one an index was built with (checked on load)."""

    root: IndexRoot = ".rayrag/indexes"
    embedder: EmbedderConfig = EmbedderConfig()
