"""The CI gate on retrieval quality: fail when nDCG@10 drops below the recorded figure by more
than the configured margin.

The figure is never typed in: `rayrag eval gate --record` writes what it measured, with what it was
measured on (dataset fingerprint and source package, subset size and seed, mode, embedder), to the
committed file `eval.gate.record`; the gate reads it. A record made on another subset, mode or
embedder is refused by name, since comparing across them would pass or fail by accident. A changed
dataset text (a new python3.11-doc upload) is still compared, with a warning that names both versions:
CI should not turn red because Debian published a fix, but the reader must know the ground moved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationError

from core.strict import StrictModel
from evaluation import provenance
from evaluation.beir import Dataset
from evaluation.config import EvalError, GateConfig


class GateRecord(StrictModel):
    """One measured gate figure and its provenance (the committed `eval.gate.record` file)."""

    ndcg10: float = Field(ge=0.0, le=1.0)
    metrics: dict[str, float]
    dataset: str
    split: str = "test"
    source: str  # the dataset's origin, e.g. "python3.11-doc 3.11.2-6+deb12u6"
    fingerprint: str  # Dataset.fingerprint() of the scored subset
    queries: int
    documents: int
    distractors: int
    seed: int
    mode: str
    embedder: str
    recorded_at: str
    command: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    message: str


def make_record(data: Dataset, spec: GateConfig, mode: str, embedder: str, metrics: dict[str, float]) -> GateRecord:
    return GateRecord(
        ndcg10=round(metrics["ndcg@10"], 4), metrics={k: round(v, 4) for k, v in metrics.items()},
        dataset=spec.dataset, split=spec.split, source=str(data.meta.get("package") or data.meta.get("source") or "unknown"),
        fingerprint=data.fingerprint(), queries=len(data.queries), documents=len(data.corpus),
        distractors=spec.distractors, seed=spec.seed, mode=mode, embedder=embedder,
        recorded_at=provenance.now(), command=provenance.command(),
    )  # fmt: skip


def write_record(record: GateRecord, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.model_dump(), indent=1) + "\n")
    return path


def read_record(path: Path) -> GateRecord | None:
    """The committed record, or None when there is none yet; a malformed one is an error naming the file."""
    if not path.exists():
        return None
    try:
        return GateRecord.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise EvalError(f"{path}: not a gate record ({exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})") from None


def check_missing(path: Path) -> GateResult:
    return GateResult(False, f"FAIL: no figure recorded in {path}: run `rayrag eval gate --record` and commit the file")


def check(measured: GateRecord, recorded: GateRecord | None, margin: float, path: Path) -> GateResult:
    if recorded is None:
        return check_missing(path)
    differs = [f"{key} {getattr(recorded, key)!r} -> {getattr(measured, key)!r}"
               for key in ("dataset", "split", "queries", "distractors", "seed", "mode", "embedder")
               if getattr(recorded, key) != getattr(measured, key)]  # fmt: skip
    if differs:
        return GateResult(False, f"FAIL: {path} was recorded on another run ({'; '.join(differs)}): "
                                 "re-record with `rayrag eval gate --record` if the change is intended")  # fmt: skip
    floor = recorded.ndcg10 - margin
    verdict = f"nDCG@10 {measured.ndcg10:.4f} vs recorded {recorded.ndcg10:.4f} (margin {margin:.3f}, floor {floor:.4f})"
    warning = ""
    if recorded.fingerprint != measured.fingerprint:
        warning = (f"\nWARNING: the dataset's text differs from the recorded one ({recorded.source} -> "
                   f"{measured.source}, {recorded.documents} -> {measured.documents} documents)")  # fmt: skip
    if measured.ndcg10 < floor:
        return GateResult(False, f"FAIL: {verdict}: retrieval quality dropped{warning}")
    if measured.ndcg10 > recorded.ndcg10 + margin:
        return GateResult(True, f"PASS: {verdict}: better than recorded; `rayrag eval gate --record` to raise it{warning}")
    return GateResult(True, f"PASS: {verdict}{warning}")
