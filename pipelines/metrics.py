"""The index job's metrics on Ray's metrics pipeline (the same one the serving app uses), recorded
once per run from its report: documents by outcome, chunks added and removed, and seconds."""

from __future__ import annotations

from ray.util.metrics import Counter, Histogram

from pipelines.report import JobReport

JOB_SECONDS = [1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200]


def record_job(report: JobReport) -> None:
    tags = {"index": report.index}
    documents = Counter("rayrag_index_documents", "Documents seen by index jobs, by outcome", ("index", "outcome"))
    for outcome, count in report.documents.model_dump().items():
        _add(documents, count, tags | {"outcome": outcome})
    chunks = Counter("rayrag_index_chunks", "Chunks added or removed by index jobs", ("index", "change"))
    _add(chunks, report.chunks.added, tags | {"change": "added"})
    _add(chunks, report.chunks.removed, tags | {"change": "removed"})
    Histogram("rayrag_index_job_seconds", "Index job duration", JOB_SECONDS, ("index",)).observe(report.seconds, tags)


def _add(counter: Counter, value: int, tags: dict[str, str]) -> None:
    if value > 0:  # Counter.inc refuses 0
        counter.inc(value, tags)
