"""Pure ranking functions of the retriever: fusion, diversity, filters, lexical search.

Kept free of Ray and of index I/O so each can be unit-tested on small inputs. BM25 is `bm25s`
(sparse-matrix BM25, well kept) with a Snowball stemmer (PyStemmer) and a stop-word list;
reciprocal-rank and weighted score fusion and MMR are the textbook formulas in a few lines each,
which no dependency would make shorter.
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


def weighted_fuse(
    rankings: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float], window: int | None = None
) -> list[tuple[int, float]]:
    """Convex combination of each ranking's scores, min-max normalised per query (cosine and BM25
    live on different scales): score(d) = sum of weight * normalised score; a ranking that missed
    `d` adds 0. Unlike RRF it keeps how far apart the scores are, not only their order.

    `window`: normalise on each ranking's top `window` scores only (those below go under 0), so the
    head of the fused ranking is the same whether 30 or 100 candidates were fetched: evaluation,
    which fetches its depth, then ranks the top 10 as a served search does."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if not ranking:
            continue
        values = np.array([score for _, score in ranking], dtype=np.float64)
        head = values[:window] if window else values
        low, span = head.min(), head.max() - head.min()
        for (item, _), value in zip(ranking, values, strict=True):
            normalised = (value - low) / span if span > 0 else 1.0
            fused[item] = fused.get(item, 0.0) + weight * normalised
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))


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


def cap_per_section(chunks: Sequence[Chunk], limit: int) -> list[int]:
    """Positions of `chunks` (in rank order) kept when at most `limit` come from one section of one
    document: five windows of one long section would leave a generator one passage's worth of facts."""
    seen: dict[tuple[str, str | None], int] = {}
    kept = []
    for position, chunk in enumerate(chunks):
        key = (chunk.source, chunk.section)
        if seen.get(key, 0) < limit:
            seen[key] = seen.get(key, 0) + 1
            kept.append(position)
    return kept


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
    """BM25 over every chunk of one index version, addressed by vector id: `texts` are what was
    indexed for each chunk (with its title and section when the index was built contextual); queries
    and texts go through the same analyser, a Snowball stemmer and a stop-word list."""

    def __init__(
        self, vids: Sequence[int], texts: Sequence[str], stemmer: str | None = "english", stopwords: str | None = "en_plus"
    ) -> None:
        import bm25s

        self._bm25s = bm25s
        self._stemmer = _stemmer(stemmer) if stemmer else None
        self._stopwords = stopwords
        self.vids = np.array(vids, dtype=np.int64)
        self.model = bm25s.BM25()
        if len(self.vids):
            self.model.index(self._tokenize(list(texts)), show_progress=False)

    def _tokenize(self, texts: list[str]):
        return self._bm25s.tokenize(texts, stopwords=self._stopwords, stemmer=self._stemmer, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top-k (vid, bm25 score) pairs; chunks sharing no term with the query are left out."""
        k = min(k, len(self.vids))
        if k == 0:
            return []
        docs, scores = self.model.retrieve(self._tokenize([query]), k=k, show_progress=False, n_threads=1)
        return [(int(self.vids[d]), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]


@functools.lru_cache(maxsize=4)
def _stemmer(language: str):
    import Stemmer

    return Stemmer.Stemmer(language)
