"""The Ray Data stages are plain callables: their per-row behaviour is tested without Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.fs as pafs
import pytest

from indexes.embedder import EmbedderConfig, embedder_spec
from indexes.manifest import content_hash
from indexes.store import lead_text
from pipelines.config import ChunkerConfig, EmbedStageConfig, ParseConfig
from pipelines.stages import (
    RECORD,
    ChunkEmbedder,
    DocumentProcessor,
    _load_for_actor,
    chunk_vectors,
    document_record,
)
from tests.fakes import word_vector

pytestmark = pytest.mark.unit
TEXT = "# Title\n\n" + "A sentence about virtual environments in Python. " * 40


def processor(known=None):
    return DocumentProcessor(pafs.LocalFileSystem(), ParseConfig(), ChunkerConfig(), EmbedderConfig(), known or {})


def row(path, key="doc.md"):
    return {"key": key, "path": str(path), "size": 1}


def test_unreadable_file_is_skipped_with_the_os_reason(tmp_path):
    [record] = processor()(row(tmp_path / "vanished.md"))
    result = document_record(record)
    assert result["status"] == "skipped" and result["reason"].startswith("cannot read:") and result["chunks"] == 0
    result, chunks = processor().process(row(tmp_path))  # a directory where a file was listed
    assert result["status"] == "skipped" and result["reason"].startswith("cannot read:") and chunks == []


def test_unchanged_content_is_not_parsed_again(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(TEXT)
    *chunks, record = processor()(row(path))
    first = document_record(record)
    assert first["status"] == "parsed" and first["content_hash"] == content_hash(TEXT.encode())
    assert chunks and first["chunks"] == len(chunks)
    assert all(c["source"] == "doc.md" and c["section"] == "Title" and c[RECORD] == "" for c in chunks)
    [again] = processor({"doc.md": first["content_hash"]})(row(path))  # unchanged: only its record
    assert document_record(again)["status"] == "unchanged" and document_record(again)["chunks"] == 0
    assert set(again) == set(chunks[0])  # one Arrow schema for every row of the stream
    assert json.loads(again[RECORD])["content_hash"] == first["content_hash"]


def test_embedder_names_missing_columns_and_adds_unit_vectors(tmp_path):
    embed = ChunkEmbedder(
        EmbedderConfig(), EmbedStageConfig(torch_threads=1), embedder_spec(EmbedderConfig()), ChunkerConfig()
    )
    with pytest.raises(KeyError, match=r"without columns .*'chunk_id'"):
        embed({"text": np.array(["x"])})
    path = tmp_path / "doc.md"
    path.write_text(TEXT)
    rows = processor()(row(path))
    batch = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    records_only = {key: values[-1:] for key, values in batch.items()}
    assert not embed(records_only)["vector"].any()  # no chunk: nothing waits for the model
    vectors = embed(batch)["vector"]
    assert vectors.shape == (len(rows), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:-1], axis=1), 1.0, rtol=1e-5)
    assert batch[RECORD][-1] and not vectors[-1].any()  # the record row passes through with zeros


def test_an_embed_actor_refuses_a_model_that_is_not_the_one_the_job_recorded(tmp_path):
    """The driver reads the spec from the model's files; the actor that loads the model checks it."""
    recorded = embedder_spec(EmbedderConfig()).model_copy(update={"dim": 128})
    embed = ChunkEmbedder(EmbedderConfig(), EmbedStageConfig(torch_threads=1), recorded, ChunkerConfig())
    path = tmp_path / "doc.md"
    path.write_text(TEXT)
    rows = processor()(row(path))
    with pytest.raises(ValueError, match="expected"):
        embed({key: np.array([r[key] for r in rows]) for key in rows[0]})


class WordEmbedder:
    """A deterministic embedder (bag of words) that counts what it was asked to embed."""

    def __init__(self) -> None:
        self.embedded: list[str] = []
        self.calls: list[int] = []

    def encode(self, texts, batch_size=64):
        self.embedded += texts
        self.calls.append(len(texts))
        return np.stack([word_vector(t) for t in texts]) if texts else np.zeros((0, 64), np.float32)


def test_a_chunks_lead_is_its_opening_sentences_after_its_heading():
    text = "Sorting HOW TO\n\nPython lists have a sort method. It sorts in place. Sorted builds a new list."
    assert lead_text(text, "Sorting HOW TO", None, 60) == "Python lists have a sort method. It sorts in place."
    assert lead_text(text, None, "Sorting HOW TO", 10) == "Python lists have a sort method."  # one at least
    assert lead_text("Short answer.", "T", "S", 350) == "Short answer."


def test_a_chunks_vector_is_the_mean_of_its_own_and_its_leads():
    """The stored vector is the normalised mean of the chunk's and its lead's embeddings, so a query
    close to either view finds it; a chunk that is all lead is embedded once, and leads off is the
    chunk's embedding alone. Chunks and leads go to the embedder in one encode, sorted by length
    together."""
    long = "Python lists have a sort method. " + "Keys, stability and reverse order are covered below. " * 8
    short = "One sentence only."
    places = [(long, "Sorting", None), (short, "Sorting", None)]
    embedder = WordEmbedder()
    vectors = chunk_vectors(embedder, places, ChunkerConfig(lead_chars=40, lead_pooling="separate"))
    mean = word_vector(long) + word_vector("Python lists have a sort method.")
    np.testing.assert_allclose(vectors[0], mean / np.linalg.norm(mean), rtol=1e-5)
    np.testing.assert_allclose(vectors[1], word_vector(short), rtol=1e-5)
    assert embedder.embedded == [long, short, "Python lists have a sort method."]
    assert embedder.calls == [3]  # one encode: the chunks and their leads together
    alone = chunk_vectors(WordEmbedder(), places, ChunkerConfig(lead_chars=None))
    np.testing.assert_allclose(alone[0], word_vector(long), rtol=1e-5)
    contextual = WordEmbedder()
    chunk_vectors(contextual, places[:1], ChunkerConfig(contextual=True, lead_chars=40, lead_pooling="separate"))
    assert contextual.embedded[1] == "Sorting\n\nPython lists have a sort method."  # the lead knows its place too


class InContextWordEmbedder(WordEmbedder):
    """`encode_with_parts` as the real embedder answers it: a part is pooled from its text's own model
    call when the model reads it (here: it lies in the text's first 80 characters), else left out. A
    pooled part's vector is its words read in context, here the words of the part and of the text's
    first word (so it differs from the part embedded alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[dict[int, str]] = []

    def encode_with_parts(self, texts, parts, batch_size=64):
        self.parts.append(dict(parts))
        found = {i: in_context(texts[i], part) for i, part in parts.items() if part in texts[i][:80]}
        return self.encode(texts, batch_size), found


def in_context(text: str, part: str) -> np.ndarray:
    return word_vector(f"{text.split()[0]} {part}")


def test_leads_pooled_in_their_chunks_model_call_cost_no_call_of_their_own():
    """With `lead_pooling: context` a chunk's lead is pooled from the chunk's own model
    call: the chunks are encoded once with their leads as parts, and only a lead the model did not read
    in its chunk (cut off, here past 80 characters) is embedded alone, in one more encode."""
    early = "Python lists have a sort method. " + "Keys, stability and reverse order are covered below. " * 8
    long_first = "A first sentence that runs on " + "and on " * 12 + "past the window. Then a second one."
    places = [(early, "Sorting", None), (long_first, "Sorting", None), ("One sentence only.", "Sorting", None)]
    embedder = InContextWordEmbedder()
    vectors = chunk_vectors(embedder, places, ChunkerConfig(lead_chars=40, lead_pooling="context"))
    cut_off = long_first.split(". ")[0] + "."
    assert embedder.parts == [{0: "Python lists have a sort method.", 1: cut_off}]  # all-lead chunk: no part
    assert embedder.embedded == [early, long_first, "One sentence only.", cut_off]
    assert embedder.calls == [3, 1]  # the chunks, then the one lead the model did not read in its chunk
    pooled = word_vector(early) + in_context(early, "Python lists have a sort method.")
    alone = word_vector(long_first) + word_vector(cut_off)
    np.testing.assert_allclose(vectors[0], pooled / np.linalg.norm(pooled), rtol=1e-5)
    np.testing.assert_allclose(vectors[1], alone / np.linalg.norm(alone), rtol=1e-5)
    np.testing.assert_allclose(vectors[2], word_vector("One sentence only."), rtol=1e-5)


def test_embed_actors_take_blocks_of_rows_and_cut_them_into_model_calls(tmp_path, monkeypatch):
    """An embed actor gets `block_rows` rows from Ray Data and hands all of a block's texts to one
    encode with `batch_size`, so the embedder sorts the whole block by length and each model call pads
    only to its own longest text; a block of one batch (as before) padded a random mix of chunks."""
    from pipelines import index_job

    class Plan:
        def map_batches(self, fn, **kwargs):
            self.kwargs = kwargs
            return self

    stage = EmbedStageConfig(batch_size=4, block_rows=32, torch_threads=1)
    plan = index_job.embed_chunks(Plan(), index_job.IndexJobConfig(embed=stage), EmbedderConfig(), None)
    assert plan.kwargs["batch_size"] == 32 and plan.kwargs["fn_constructor_kwargs"]["stage"].batch_size == 4
    calls = []

    class Recording:
        def encode(self, texts, batch_size):
            calls.append((len(texts), batch_size))
            return np.stack([word_vector(t, 384) for t in texts])

    monkeypatch.setattr("pipelines.stages._load_for_actor", lambda *args: Recording())
    embed = ChunkEmbedder(EmbedderConfig(), stage, embedder_spec(EmbedderConfig()), ChunkerConfig(lead_chars=None))
    path = tmp_path / "doc.md"
    path.write_text(TEXT * 3)
    rows = processor()(row(path))
    embed({key: np.array([r[key] for r in rows]) for key in rows[0]})
    assert len(rows) - 1 > 4 and calls == [(len(rows) - 1, 4)]  # the block's chunks in one encode, calls of 4


def test_embed_actors_load_the_embedder_for_bulk_work(monkeypatch):
    """An actor's block is many model calls: it loads the embedder for bulk work (OpenVINO's
    throughput streams, `load_embedder`), with the stage's threads, checked against the job's spec."""
    import torch

    loaded = []

    class Loaded:
        def check_spec(self, spec):
            loaded.append(spec)

    def load(config, threads=None, bulk=False):
        loaded.append((threads, bulk))
        return Loaded()

    monkeypatch.setattr("pipelines.stages.load_embedder", load)
    spec = embedder_spec(EmbedderConfig())
    threads = torch.get_num_threads()  # the actor sets torch's threads: left as they are here
    assert isinstance(_load_for_actor(EmbedderConfig(), threads, spec), Loaded)
    assert loaded == [(threads, True), spec]


def test_an_embed_block_smaller_than_a_model_call_is_refused():
    with pytest.raises(ValueError, match=r"block_rows \(8\) is below batch_size \(16\)"):
        EmbedStageConfig(batch_size=16, block_rows=8)
