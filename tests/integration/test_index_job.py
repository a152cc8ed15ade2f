"""The index job end to end on a local Ray cluster, with the real parsers, embedder and backends."""

from __future__ import annotations

import json

import pytest

from indexes.faiss_index import TrainingDataError
from indexes.layout import IndexDirectory
from indexes.manifest import Manifest
from indexes.reader import IndexVersion
from indexes.store import vector_id
from pipelines.report import JobReport
from tests.conftest import write_corpus
from tests.integration.conftest import assert_consistent, job_config, run_job, search

pytestmark = pytest.mark.integration

BACKENDS = {
    "faiss-flat": {"index_job.backend.kind": "faiss", "index_job.backend.index_type": "flat"},
    "faiss-hnsw": {"index_job.backend.kind": "faiss", "index_job.backend.index_type": "hnsw"},
    "qdrant-embedded": {"index_job.backend.kind": "qdrant"},
}
DOCS = {
    "sql.md": "# SQLite\n\n" + "The sqlite3 module provides a SQL interface to SQLite databases. " * 12,
    "regex.md": "# Regular expressions\n\n" + "The re module matches text against regular expression patterns. " * 12,
    "json.txt": "JSON encoding\n\n" + "The json module encodes Python objects as JSON text and decodes it back. " * 12,
}


def test_sample_corpus_of_every_format_is_indexed_and_searchable(ray_cluster, tmp_path, sample_dir, query_embedder):
    config = job_config(tmp_path)
    report = run_job(config, sample_dir)
    assert report.full_rebuild and report.rebuild_reason == "first version of this index"
    assert report.documents.parsed == 10 and report.documents.skipped == 0
    assert report.chunks.added == report.chunks.total > 30
    assert_consistent(config)
    expectations = {
        "How do I create a virtual environment with venv?": "venv.pdf",
        "fnmatchcase: test whether a filename matches a pattern, case-sensitively": "library/fnmatch.html",
        "generate a secure random token for a password reset URL": "library/secrets.html",
        "What should I read after finishing the tutorial?": "whatnow.md",
        "Which standard library module handles dates and times?": "stdlib.docx",
    }
    for question, source in expectations.items():
        hits = search(config, query_embedder, question)
        assert hits[0].chunk.source == source, (question, [h.chunk.source for h in hits])
    pdf_hit = search(config, query_embedder, "pip install a package into the virtual environment", k=5)
    assert any(h.chunk.source == "venv.pdf" and h.chunk.page for h in pdf_hit)
    html_hit = search(config, query_embedder, "fnmatch.translate regular expression", k=1)[0].chunk
    assert html_hit.title.startswith("fnmatch") and html_hit.section


@pytest.mark.parametrize("backend", list(BACKENDS), ids=list(BACKENDS))
def test_rerun_embeds_only_new_and_changed_documents(ray_cluster, tmp_path, backend, query_embedder):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    config = job_config(tmp_path, **BACKENDS[backend])
    first = run_job(config, corpus)
    before = Manifest.load(IndexDirectory(config.indexes.root, "test").current_path())

    (corpus / "sql.md").write_text("# SQLite\n\n" + "Use executemany to insert many rows into a SQLite table. " * 12)
    (corpus / "regex.md").unlink()
    (corpus / "csv.md").write_text("# CSV\n\n" + "The csv module reads and writes comma separated values. " * 12)
    second = run_job(config, corpus)

    assert not second.full_rebuild and second.parent_version == first.version
    assert (second.documents.parsed, second.documents.unchanged, second.documents.deleted) == (2, 1, 1)
    removed = len(before.documents["sql.md"].chunk_ids) + len(before.documents["regex.md"].chunk_ids)
    assert second.chunks.removed == removed
    after = assert_consistent(config).manifest
    assert set(after.documents) == {"sql.md", "json.txt", "csv.md"}
    assert after.documents["json.txt"] == before.documents["json.txt"]
    assert search(config, query_embedder, "comma separated values file")[0].chunk.source == "csv.md"
    assert all(h.chunk.source != "regex.md" for h in search(config, query_embedder, "regular expression pattern", 5))

    third = run_job(config, corpus)
    assert (third.documents.parsed, third.chunks.added, third.chunks.removed) == (0, 0, 0)
    assert third.chunks.total == second.chunks.total


def test_changed_chunker_or_embedder_spec_forces_a_full_rebuild(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    run_job(job_config(tmp_path), corpus)
    changed = run_job(job_config(tmp_path, **{"index_job.chunker.size": 400, "index_job.chunker.overlap": 50}), corpus)
    assert changed.full_rebuild and changed.documents.parsed == 3
    assert changed.rebuild_reason.startswith("chunker settings changed (")
    assert "overlap: 150 -> 50" in changed.rebuild_reason and "size: 1000 -> 400" in changed.rebuild_reason
    resized = run_job(
        job_config(
            tmp_path,
            **{"index_job.chunker.size": 400, "index_job.chunker.overlap": 50, "indexes.embedder.max_seq_length": 128},
        ),
        corpus,
    )
    assert resized.rebuild_reason == "embedder spec changed (max_seq_length: 256 -> 128)"
    assert (
        run_job(
            job_config(
                tmp_path,
                **{
                    "index_job.chunker.size": 400,
                    "index_job.chunker.overlap": 50,
                    "indexes.embedder.max_seq_length": 128,
                },
            ),
            corpus,
            rebuild=True,
        ).rebuild_reason
        == "--rebuild requested"
    )


def test_only_the_last_k_versions_are_kept_and_each_has_its_report(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    config = job_config(tmp_path, **{"index_job.keep_versions": 2})
    reports = []
    for round_ in range(3):
        (corpus / "round.md").write_text(f"# Round {round_}\n\n" + f"This is round number {round_} of the test. " * 10)
        reports.append(run_job(config, corpus))
    directory = IndexDirectory(config.indexes.root, "test")
    assert directory.versions() == [r.version for r in reports[1:]]
    assert directory.current_version() == reports[-1].version
    stored = json.loads((directory.current_path() / "report.json").read_text())
    assert JobReport.model_validate(stored) == reports[-1]


def test_bad_files_are_reported_and_everything_else_is_indexed(ray_cluster, tmp_path):
    latin1 = "Les élèves apprennent la programmation. Le café est très bon pour travailler longtemps."
    corpus = write_corpus(
        tmp_path / "corpus",
        DOCS
        | {
            "empty.txt": b"",
            "junk.txt": bytes(range(256)) * 16,
            "latin1.txt": latin1.encode("latin-1"),
            "broken.pdf": b"%PDF-1.7\n%\xe2\xe3\n1 0 obj << /Type /Catalog >> trailer",
            "broken.docx": b"PK\x03\x04 this is not a zip archive",
            "picture.png": b"\x89PNG\r\n\x1a\n",
            "huge.md": "# Huge\n\n" + "word " * 3000,
        },
    )
    config = job_config(tmp_path, **{"index_job.source.max_file_bytes": 10_000})
    report = run_job(config, corpus)
    reasons = {note.path: note.reason for note in report.skipped}
    assert reasons["empty.txt"] == "empty file"
    assert reasons["junk.txt"] == "binary content in a text file"
    assert reasons["broken.pdf"].startswith("corrupt pdf:")
    assert reasons["broken.docx"].startswith("could not parse docx:")
    assert reasons["picture.png"] == "unsupported extension '.png'"
    assert reasons["huge.md"].endswith("over the 10000-byte cap (source.max_file_bytes)")
    assert set(reasons) == {"empty.txt", "junk.txt", "broken.pdf", "broken.docx", "picture.png", "huge.md"}
    assert [(w.path, w.reason.split(":")[0]) for w in report.warnings] == [("latin1.txt", "not UTF-8")]
    assert report.documents.parsed == 4 and report.documents.listed == 10 and report.documents.skipped == 6
    manifest = assert_consistent(config).manifest
    assert set(manifest.documents) == {"sql.md", "regex.md", "json.txt", "latin1.txt"}
    assert "skipped: 6 file(s)" in report.summary()


def test_ivf_pq_trains_on_the_first_build_and_updates_incrementally(ray_cluster, tmp_path, sample_dir, query_embedder):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(sample_dir, corpus)
    ivf = {
        "index_job.backend.index_type": "ivf_pq",
        "index_job.backend.nlist": 4,
        "index_job.backend.pq_m": 8,
        "index_job.backend.pq_nbits": 4,
        "index_job.backend.nprobe": 4,
    }
    config = job_config(tmp_path, **ivf)
    first = run_job(config, corpus)
    assert first.backend == "faiss-ivf_pq" and first.chunks.total == first.chunks.added > 16
    (corpus / "csv.md").write_text("# CSV\n\n" + "The csv module reads and writes comma separated values. " * 12)
    second = run_job(config, corpus)
    assert not second.full_rebuild and second.documents.parsed == 1
    assert_consistent(config)
    # PQ with 16 codes ranks too coarsely to promise a top-k hit, so check membership exactly:
    # with nprobe == nlist and k == count, IVF returns every vector it holds.
    version = IndexVersion.open_current(config.indexes.root, "test")
    try:
        everything, _ = version.vectors.search(query_embedder.encode(["comma separated values"]), version.vectors.count)
        csv_ids = {vector_id(cid) for cid in version.manifest.documents["csv.md"].chunk_ids}
        assert csv_ids and csv_ids <= set(everything[0].tolist())
    finally:
        version.close()


def test_ivf_pq_on_a_corpus_too_small_to_train_names_the_settings(ray_cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    config = job_config(tmp_path, **{"index_job.backend.index_type": "ivf_pq"})
    with pytest.raises(TrainingDataError, match=r"ivf_pq needs at least 256 vectors to train \(nlist=16, pq_nbits=8\)"):
        run_job(config, corpus)
    assert IndexDirectory(config.indexes.root, "test").current_version() is None


def test_parse_and_embed_stream_into_each_other(ray_cluster, tmp_path, monkeypatch):
    """The embed actors start on the first parsed documents, not after the last one: the parse of
    the last file is held until the embed stage has embedded a chunk (the stages' probe hook), which
    can only happen if chunks flow on while parsing continues."""
    corpus = write_corpus(tmp_path / "corpus", DOCS)
    last = sorted(DOCS)[-1]
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "hold-parse").write_text(last)
    monkeypatch.setenv("RAYRAG_JOB_PROBE", str(probe))
    report = run_job(
        job_config(
            tmp_path,
            **{"index_job.parse.concurrency": 1, "index_job.embed.batch_size": 2, "index_job.embed.block_rows": 2},
        ),
        corpus,
    )
    assert (probe / "embedded").exists()
    assert not (probe / "parse-gave-up").exists(), f"{last} was parsed before any chunk was embedded"
    assert report.documents.parsed == len(DOCS) and report.chunks.added >= len(DOCS)
