"""Pure ranking functions of the retriever: fusion, diversity, filters, lexical search.

Kept free of Ray and of index I/O so each can be unit-tested on small inputs. BM25 is `bm25s`
(sparse-matrix BM25, well kept); reciprocal-rank fusion and MMR are the textbook formulas in a few
lines each, which no dependency would make shorter.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from fnmatch import translate

import numpy as np

from indexes.store import Chunk


def rrf_fuse(rankings: Sequence[Sequence[int]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion (Cormack et al. 2009): score(d) = sum over rankings of 1 / (k + rank)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))


def mmr(query: np.ndarray, candidates: np.ndarray, top_k: int, lambda_: float = 0.5) -> list[int]:
    """Maximal marginal relevance: pick, one at a time, the candidate most similar to the query
    and least similar to what was already picked. Vectors are unit length (cosine = dot)."""
    if len(candidates) == 0:
        return []
    relevance = candidates @ query
    similarity = candidates @ candidates.T
    chosen: list[int] = [int(np.argmax(relevance))]
    while len(chosen) < min(top_k, len(candidates)):
        redundancy = similarity[:, chosen].max(axis=1)
        score = lambda_ * relevance - (1 - lambda_) * redundancy
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return chosen


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern:
    """A client's glob compiled once; the cache is keyed by client input, so it is small and bounded
    (fnmatch's own keeps 32,768 patterns)."""
    return re.compile(translate(pattern))


def matches(chunk: Chunk, source: str | None, section: str | None) -> bool:
    """Metadata filter: `source` is an exact path or a glob; `section` a case-insensitive substring."""
    if source is not None and not (chunk.source == source or _glob(source).match(chunk.source)):
        return False
    return section is None or section.lower() in (chunk.section or chunk.title or "").lower()


class LexicalIndex:
    """BM25 over every chunk of one index version, addressed by vector id."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        import bm25s

        self._bm25s = bm25s
        self.vids = np.array([c.vid for c in chunks], dtype=np.int64)
        self.model = bm25s.BM25()
        if chunks:
            self.model.index(self._tokenize([c.text for c in chunks]), show_progress=False)

    def _tokenize(self, texts: list[str]):
        return self._bm25s.tokenize(texts, stopwords="en", show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-k (vid, bm25 score) pairs; chunks sharing no term with the query are left out."""
        k = min(k, len(self.vids))
        if k == 0:
            return []
        docs, scores = self.model.retrieve(self._tokenize([query]), k=k, show_progress=False, n_threads=1)
        return [(int(self.vids[d]), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
