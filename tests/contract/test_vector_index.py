"""One contract, every backend: FAISS (flat, HNSW, IVF-PQ) and Qdrant embedded pass the same tests."""

from __future__ import annotations

import numpy as np
import pytest

from indexes.backend_config import FaissConfig, QdrantConfig
from indexes.backends import create_vector_index, open_vector_index
from indexes.faiss_index import FaissIndex, ivf_shape
from indexes.store import Chunk, ChunkStore
from indexes.vector import ShardableIndex, VectorIndex

pytestmark = pytest.mark.contract

DIM = 32
N = 600  # enough to train IVF-PQ (2**pq_nbits codebook entries)

BACKENDS = {
    "faiss-flat": FaissConfig(index_type="flat"),
    "faiss-hnsw": FaissConfig(index_type="hnsw", ef_search=128),
    "faiss-ivf_pq": FaissConfig(index_type="ivf_pq", nlist=8, pq_m=8, pq_nbits=6, nprobe=8),  # refined on fp16
    # nlist from the size (16 lists for 600 vectors), all probed: a contract test may hold 3 vectors
    "faiss-ivf_pq-sized": FaissConfig(index_type="ivf_pq", pq_m=8, pq_nbits=6, nprobe=16, refine="flat"),
    "faiss-ivf_pq-codes": FaissConfig(index_type="ivf_pq", nlist=8, pq_m=8, pq_nbits=6, nprobe=8, refine=None),
    "qdrant-embedded": QdrantConfig(),
}


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def backend(request):
    return request.param, BACKENDS[request.param]


@pytest.fixture
def vectors():
    return unit_rows(N), np.arange(1000, 1000 + N, dtype=np.int64) * 7919


@pytest.fixture
def index(tmp_path, backend, vectors):
    _, config = backend
    rows, _ = vectors
    created = create_vector_index(tmp_path / "v1", DIM, config, "test-v1")
    if getattr(created, "needs_training", False):
        created.train(rows)
    yield created
    created.close()


def _stored_cosine_floor(index: VectorIndex) -> float:
    """How close a backend's stored vectors come back: IVF-PQ without re-scoring keeps only its
    codes' reconstruction; every other backend keeps the vectors (fp16 at worst)."""
    config = index.config
    codes_only = isinstance(config, FaissConfig) and config.index_type == "ivf_pq" and not config.refine
    return 0.7 if codes_only else 0.99


def filled(index: VectorIndex, vectors) -> VectorIndex:
    rows, ids = vectors
    index.add(ids, rows, [{"n": int(i)} for i in range(len(ids))])
    return index


def test_is_a_vector_index(index):
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM and index.count == 0


def test_add_then_search_finds_each_vector_first(index, vectors):
    rows, ids = vectors
    filled(index, vectors)
    assert index.count == N
    found, scores = index.search(rows[:20], 5)
    assert found.shape == (20, 5) and scores.shape == (20, 5)
    assert (found[:, 0] == ids[:20]).mean() >= 0.9  # IVF-PQ is approximate; the others are exact here
    assert np.all(np.diff(scores, axis=1) <= 1e-5), "scores are sorted best first"


def test_delete_removes_ids_from_results_and_count(index, vectors):
    rows, ids = vectors
    filled(index, vectors)
    index.delete(ids[:50])
    index.delete(np.array([123456789], dtype=np.int64))  # unknown ids are ignored
    assert index.count == N - 50
    found, _ = index.search(rows[:50], 10)
    assert not np.isin(found, ids[:50]).any()


def test_missing_slots_are_minus_one(index, vectors):
    rows, ids = vectors
    index.add(ids[:3], rows[:3])
    found, scores = index.search(rows[:1], 5)
    assert set(found[0, :3]) == set(ids[:3])
    assert list(found[0, 3:]) == [-1, -1] and np.all(np.isneginf(scores[0, 3:]))


def test_save_and_open_round_trip(index, vectors, tmp_path):
    rows, _ids = vectors
    filled(index, vectors)
    before = index.search(rows[:10], 5)
    index.save(index.path)
    index.close()
    reopened = open_vector_index(index.path)
    try:
        assert reopened.count == N
        after = reopened.search(rows[:10], 5)
        np.testing.assert_array_equal(before[0], after[0])
    finally:
        reopened.close()


def test_copy_to_is_independent(index, vectors, tmp_path):
    _rows, ids = vectors
    filled(index, vectors)
    index.save(index.path)
    copy = index.copy_to(tmp_path / "v2", "test-v2")
    copy.delete(ids[:10])
    assert copy.count == N - 10 and index.count == N
    copy.save(copy.path)
    copy.close()  # embedded Qdrant storage admits one open client at a time
    reopened = open_vector_index(tmp_path / "v2")
    assert reopened.count == N - 10
    reopened.close()


def test_drop_removes_storage(index, vectors):
    filled(index, vectors)
    index.save(index.path)
    index.drop()
    assert not index.path.exists()


def test_metadata_round_trips_through_the_chunk_store(index, tmp_path):
    chunks = [
        Chunk(f"{i:016x}", f"docs/{i}.html", f"text {i}", 0, 6, title="T", section=f"S{i}", page=i or None)
        for i in range(1, 6)
    ]
    store = ChunkStore(tmp_path / "chunks.sqlite")
    store.add(chunks)
    rows = unit_rows(len(chunks), seed=3)
    index.add(np.array([c.vid for c in chunks]), rows, [c.payload() for c in chunks])
    found, _ = index.search(rows[2:3], 1)
    assert store.get([int(found[0, 0])])[int(found[0, 0])] == chunks[2]
    store.close()


def test_sharded_builds_merge_into_one_index(index, vectors):
    if not isinstance(index, ShardableIndex):
        pytest.skip("backend is not built in shards")
    rows, ids = vectors
    shards = []
    for part in np.array_split(np.arange(N), 3):
        shard = index.empty_copy()
        shard.add(ids[part], rows[part])
        shards.append(type(index).from_bytes(shard.to_bytes(), index.config))
    for shard in shards:
        index.merge_from(shard)
    assert index.count == N
    found, _ = index.search(rows[:20], 1)
    assert (found[:, 0] == ids[:20]).mean() >= 0.9


def test_stored_vectors_come_back_by_id_in_the_order_asked(index, vectors):
    """What MMR diversifies with: exact backends return the vectors themselves, IVF-PQ its codes'
    reconstruction, close to them."""
    rows, ids = vectors
    filled(index, vectors)
    picked = np.array([17, 3, 250, 3])
    got = index.vectors(ids[picked])
    assert got.shape == (4, DIM)
    cosine = (got * rows[picked]).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= _stored_cosine_floor(index)
    assert np.allclose(got[1], got[3])


# -- IVF-PQ: re-scored candidates and a shape from the index's size -------------------------------


def _ivf(tmp_path, **settings) -> FaissIndex:
    config = FaissConfig(index_type="ivf_pq", pq_m=8, pq_nbits=6, **settings)
    index = FaissIndex.create(DIM, config, tmp_path / "ivf")
    index.train(unit_rows(N, seed=5), expected=N)
    return index


def test_refined_ivf_pq_scores_are_the_vectors_own_and_rank_like_exact_search(tmp_path, vectors):
    """4-byte PQ codes misrank neighbours; re-scoring the candidates on stored vectors does not."""
    rows, ids = vectors
    queries = unit_rows(30, seed=9)
    exact = np.argsort(-(queries @ rows.T), axis=1)[:, :5]
    hits = {}
    for refine in ("flat", "fp16", None):
        index = _ivf(tmp_path / str(refine), nlist=4, nprobe=4, refine=refine, refine_candidates=100)
        index.add(ids, rows)
        found, scores = index.search(queries, 5)
        hits[refine] = np.mean([len(set(f) & set(ids[e])) / 5 for f, e in zip(found, exact, strict=True)])
        if refine:
            true = np.array([[rows[ids.tolist().index(i)] @ q for i in f] for f, q in zip(found, queries, strict=True)])
            assert np.abs(scores - true).max() < 0.002  # fp16 rounds in the fourth digit
    assert min(hits["flat"], hits["fp16"]) >= 0.95 and hits[None] < 0.6, hits


def test_ivf_pq_is_sized_for_the_vectors_it_will_hold_and_keeps_the_shape(tmp_path, vectors):
    assert ivf_shape(1_000_000, 100_000) == (2048, 32)
    assert ivf_shape(1_000_000, 65_536) == (1024, 16)
    assert ivf_shape(10_000, 10_000) == (256, 8)
    assert ivf_shape(600, 600) == (16, 8)
    rows, ids = vectors
    index = _ivf(tmp_path)
    assert (index.config.nlist, index.config.nprobe, index.index.nlist) == (16, 8, 16)
    index.add(ids, rows)
    index.save(index.path)
    reopened = FaissIndex.open(index.path)
    assert (reopened.config.nlist, reopened.config.nprobe, reopened.refine.ntotal) == (16, 8, N)


def test_a_set_nlist_is_kept_whatever_the_size(tmp_path):
    index = _ivf(tmp_path, nlist=4, nprobe=2)
    assert (index.config.nlist, index.config.nprobe, index.index.nlist) == (4, 2, 4)


def test_after_a_delete_the_stored_vectors_still_belong_to_their_ids(index, vectors):
    """A backend that caches where each id's vector lies must forget it when vectors move."""
    rows, ids = vectors
    filled(index, vectors)
    index.vectors(ids[:5])  # whatever is cached to find stored vectors is made now
    index.delete(ids[:50])
    got = index.vectors(ids[60:70])
    cosine = (got * rows[60:70]).sum(axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= _stored_cosine_floor(index)
