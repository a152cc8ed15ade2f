"""Fusion, diversity, filters and BM25 of the retriever, on inputs small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from indexes.store import Chunk, indexed_text
from serving.ranking import LexicalIndex, cap_per_section, matches, mmr, rrf_fuse, weighted_fuse

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
    index = LexicalIndex([c.vid for c in chunks], [c.text for c in chunks])
    hits = index.search("lava volcanoes", 3)
    assert hits[0][0] == chunks[0].vid and {vid for vid, _ in hits} == {chunks[0].vid, chunks[2].vid}
    assert index.search("quantum", 3) == []


def test_bm25_stems_and_drops_stop_words_for_chunks_and_queries_alike():
    texts = ["Removing duplicated entries of a list", "How the list type grows", "Sorting keys"]
    vids = [1, 2, 3]
    analysed = LexicalIndex(vids, texts)
    assert [vid for vid, _ in analysed.search("how do I remove duplicates", 3)] == [1]  # remov, duplic; no "how"
    plain = LexicalIndex(vids, texts, stemmer=None, stopwords="en")
    assert [vid for vid, _ in plain.search("how do I remove duplicates", 3)] == [2]  # only "how" matches


def test_weighted_fusion_keeps_score_gaps_and_the_weight_decides():
    dense = [(1, 0.90), (2, 0.89), (3, 0.10)]
    lexical = [(3, 12.0), (2, 11.0), (4, 1.0)]
    assert weighted_fuse([dense, lexical], [1.0, 0.0])[0][0] == 1  # all dense: dense's order
    assert weighted_fuse([dense, lexical], [0.0, 1.0])[0][0] == 3  # all BM25: BM25's order
    fused = dict(weighted_fuse([dense, lexical], [0.5, 0.5]))
    assert fused[2] == pytest.approx(0.5 * (0.79 / 0.8) + 0.5 * (10 / 11))  # near the top of both
    assert max(fused, key=fused.get) == 2 and fused[4] == 0.0  # the bottom of one list, absent from the other
    assert weighted_fuse([[(7, 0.5)], []], [0.7, 0.3]) == [(7, 0.7)]  # one candidate: full marks, weighted


def test_weighted_fusion_ranks_its_head_alike_however_deep_it_fetched():
    """Normalised on a window of each ranking's head, fetching deeper (evaluation's depth) does not
    reorder the top: what is scored is what a served search returns."""
    dense = [(vid, 0.9 - 0.01 * vid) for vid in range(100)]
    lexical = [(vid, 10.0 - 0.3 * ((vid * 7) % 30)) for vid in range(100)]
    served = weighted_fuse([dense[:30], lexical[:30]], [0.6, 0.4], window=30)[:10]
    deep = weighted_fuse([dense, lexical], [0.6, 0.4], window=30)[:10]
    assert [v for v, _ in deep] == [v for v, _ in served]
    assert [v for v, _ in weighted_fuse([dense, lexical], [0.6, 0.4])[:10]] != [v for v, _ in served]


def test_contextual_text_puts_title_and_section_first_once():
    assert indexed_text("body", "Sorting HOW TO", "Key Functions", True) == "Sorting HOW TO > Key Functions\n\nbody"
    assert indexed_text("body", "FAQ", "FAQ", True) == "FAQ\n\nbody"
    assert indexed_text("body", None, None, True) == "body" and indexed_text("body", "T", "S", False) == "body"


def test_a_result_holds_at_most_n_chunks_of_one_section_in_rank_order():
    ranked = [chunk("a.md", "1", "Intro"), chunk("a.md", "2", "Intro"), chunk("a.md", "3", "Usage"),
              chunk("b.md", "4", "Intro"), chunk("a.md", "5", "Intro")]  # fmt: skip
    assert cap_per_section(ranked, 1) == [0, 2, 3]  # a.md#Intro once; b.md's Intro is another section
    assert cap_per_section(ranked, 2) == [0, 1, 2, 3]
    assert cap_per_section(ranked, 9) == [0, 1, 2, 3, 4]
