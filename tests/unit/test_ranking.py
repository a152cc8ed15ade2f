"""Fusion, diversity, filters and BM25 of the retriever, on inputs small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from indexes.store import Chunk
from serving.ranking import LexicalIndex, matches, mmr, rrf_fuse

pytestmark = pytest.mark.unit


def chunk(source: str, text: str, section: str | None = None) -> Chunk:
    return Chunk(
        chunk_id=f"{abs(hash(source + text)):016x}"[:16],
        source=source,
        text=text,
        start=0,
        end=len(text),
        section=section,
    )


def test_rrf_rewards_agreement():
    fused = rrf_fuse([[1, 2, 3], [3, 2, 4]], k=60)
    scores = dict(fused)
    assert scores[2] == pytest.approx(2 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert [item for item, _ in fused][:2] == [3, 2] or [item for item, _ in fused][:2] == [2, 3]
    assert fused[0][1] >= fused[-1][1]


def test_mmr_skips_near_duplicates():
    query = np.array([1.0, 0.0])
    near = np.array([0.99, 0.141])
    candidates = np.array([[1.0, 0.0], near / np.linalg.norm(near), [0.6, -0.8]])
    assert mmr(query, candidates, top_k=2, lambda_=1.0) == [0, 1]  # pure relevance keeps the duplicate
    assert mmr(query, candidates, top_k=2, lambda_=0.3) == [0, 2]  # diversity replaces it


def test_metadata_filters():
    c = chunk("library/csv.html", "text", section="Reader Objects")
    assert matches(c, "library/csv.html", None) and matches(c, "library/*.html", "reader")
    assert not matches(c, "tutorial/*", None) and not matches(c, None, "writer")


def test_bm25_ranks_term_matches_and_ignores_unknown_words():
    chunks = [
        chunk("a.md", "volcanoes erupt lava and ash"),
        chunk("b.md", "bread rises with yeast"),
        chunk("c.md", "lava cools"),
    ]
    index = LexicalIndex(chunks)
    hits = index.search("lava volcanoes", 3)
    assert hits[0][0] == chunks[0].vid and {vid for vid, _ in hits} == {chunks[0].vid, chunks[2].vid}
    assert index.search("quantum", 3) == []
