"""The job report: counts, timings and every skipped file with its reason; stored with the version."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import Field, NonNegativeInt

from core.strict import StrictModel

REPORT_FILE = "report.json"
SUMMARY_EXAMPLES = 8


class FileNote(StrictModel):
    path: str
    reason: str


class DocumentCounts(StrictModel):
    listed: NonNegativeInt = 0  # every file the source listed, supported or not
    parsed: NonNegativeInt = 0  # new or changed, parsed and chunked this run
    unchanged: NonNegativeInt = 0  # same content hash as the previous version: not re-embedded
    skipped: NonNegativeInt = 0  # refused, each with a reason in `skipped`
    deleted: NonNegativeInt = 0  # in the previous version, gone from the source now


class ChunkCounts(StrictModel):
    added: NonNegativeInt = 0
    removed: NonNegativeInt = 0
    total: NonNegativeInt = 0


class JobReport(StrictModel):
    index: str
    version: str
    parent_version: str | None
    source: str
    backend: str
    full_rebuild: bool
    rebuild_reason: str | None = None
    documents: DocumentCounts
    chunks: ChunkCounts
    seconds: float
    chunks_per_second: float
    skipped: list[FileNote] = Field(default_factory=list)
    warnings: list[FileNote] = Field(default_factory=list)

    def save(self, directory: Path) -> None:
        (directory / REPORT_FILE).write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, directory: Path) -> JobReport | None:
        path = directory / REPORT_FILE
        return cls.model_validate_json(path.read_text()) if path.exists() else None

    def summary(self) -> str:
        """The lines printed at the end of a run."""
        d, c = self.documents, self.chunks
        lines = [
            f"index {self.index!r} version {self.version} ({self.backend}) from {self.source}",
            f"  {'full rebuild: ' + self.rebuild_reason if self.full_rebuild else 'incremental update of ' + str(self.parent_version)}",
            f"  documents: {d.listed} listed, {d.parsed} parsed, {d.unchanged} unchanged, {d.skipped} skipped, {d.deleted} deleted",
            f"  chunks: {c.added} added, {c.removed} removed, {c.total} in the index",
            f"  {self.seconds:.1f} s, {self.chunks_per_second:.1f} chunks/s",
        ]
        lines += _grouped("skipped", self.skipped) + _grouped("warnings", self.warnings)
        return "\n".join(lines)


def _grouped(label: str, notes: list[FileNote]) -> list[str]:
    if not notes:
        return []
    lines = [f"  {label}: {len(notes)} file(s)"]
    for reason, count in Counter(_reason_kind(n.reason) for n in notes).most_common():
        lines.append(f"    {count} x {reason}")
    lines += [f"    - {n.path}: {n.reason}" for n in notes[:SUMMARY_EXAMPLES]]
    if len(notes) > SUMMARY_EXAMPLES:
        lines.append(f"    ... and {len(notes) - SUMMARY_EXAMPLES} more in report.json")
    return lines


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0]
