"""The index job's write step on the driver, without Ray: what it stores from the job's stream."""

from __future__ import annotations

import numpy as np
import pytest

from indexes.backend_config import FaissConfig
from indexes.store import vector_id
from pipelines.stages import CHUNK_COLUMNS, RECORD
from pipelines.write import add_chunks, open_writable
from tests.fakes import word_vector

pytestmark = pytest.mark.unit
DIM = 64
TEXTS = ["virtual environments with venv", "regular expressions in re", "reading CSV files"]


class Stream:
    """The materialized stream as `add_chunks` reads it: numpy batches of chunk rows and each
    document's record row. It has no Ray Data operations, so a write that needs one fails here."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches

    def iter_batches(self, batch_size: int, batch_format: str):
        assert batch_format == "numpy"
        return iter(self.batches)


def stream() -> Stream:
    rows = []
    for n, text in enumerate(TEXTS):
        chunk_id = f"{n + 1:016x}"
        rows.append({"chunk_id": chunk_id, "vid": vector_id(chunk_id), "source": "doc.md", "title": "", "section": "",
                     "page": -1, "start": 0, "end": len(text), "text": text, "vector": word_vector(text, DIM),
                     RECORD: "", "chunks": 0})  # fmt: skip
    record = {k: "" for k in ("chunk_id", "source", "title", "section", "text")}
    record |= {"vid": 0, "page": -1, "start": 0, "end": 0, "vector": np.zeros(DIM, np.float32),
               RECORD: '{"key": "doc.md", "status": "parsed"}', "chunks": 3}  # fmt: skip
    rows.insert(2, record)  # a document's record row travels among the chunks
    columns = [*CHUNK_COLUMNS, "vector", RECORD, "chunks"]
    batch = {c: np.array([r[c] for r in rows]) if c != "vector" else np.stack([r[c] for r in rows]) for c in columns}
    return Stream([{c: v[:2] for c, v in batch.items()}, {c: v[2:] for c, v in batch.items()}])


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_flat_and_hnsw_vectors_are_added_on_the_driver_and_record_rows_are_not_stored(tmp_path, index_type):
    """No shard task for an index whose shards would only be copied (flat) or built again (HNSW):
    the stream's chunks go into the store and the index as they pass, its record rows nowhere. The
    stream has no Ray Data operations, so a write that filtered it or cut it into shards fails here."""
    store, vectors = open_writable(tmp_path, None, FaissConfig(index_type=index_type), DIM, "t")
    assert not vectors.builds_in_shards
    try:
        chunk_ids = add_chunks(store, vectors, stream(), total=len(TEXTS))
        assert chunk_ids == {"doc.md": [f"{n:016x}" for n in (1, 2, 3)]}
        assert store.count() == vectors.count == len(TEXTS)
        ids, _ = vectors.search(np.stack([word_vector("reading CSV files", DIM)]), 1)
        assert ids[0, 0] == vector_id(f"{3:016x}")
        assert 0 not in vectors.stored_vectors()[0]  # the record row's vid
    finally:
        vectors.close()
        store.close()


def test_only_ivf_pq_builds_in_shard_tasks():
    """Its add encodes every vector, which tasks divide; a flat add is a copy, and an HNSW shard's
    graph is rebuilt when merged (`merge_from` inserts its vectors again)."""
    from indexes.faiss_index import FaissIndex

    shards = {kind: FaissIndex.create(DIM, FaissConfig(index_type=kind)).builds_in_shards for kind in ("flat", "hnsw")}
    assert shards == {"flat": False, "hnsw": False}
    assert FaissIndex.create(DIM, FaissConfig(index_type="ivf_pq", nlist=4, pq_m=8)).builds_in_shards
