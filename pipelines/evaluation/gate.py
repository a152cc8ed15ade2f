"""The CI gate on retrieval quality: fail when nDCG@10 drops below the recorded figure by more
than the configured margin. A rise is reported so the recorded figure can be raised by hand."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.evaluation.config import GateConfig


@dataclass(frozen=True)
class GateResult:
    passed: bool
    message: str


def check(measured: float, gate: GateConfig) -> GateResult:
    if gate.recorded_ndcg10 is None:
        return GateResult(False, f"nDCG@10 {measured:.4f}; no figure recorded: set eval.gate.recorded_ndcg10")
    floor = gate.recorded_ndcg10 - gate.margin
    verdict = (
        f"nDCG@10 {measured:.4f} vs recorded {gate.recorded_ndcg10:.4f} (margin {gate.margin:.3f}, floor {floor:.4f})"
    )
    if measured < floor:
        return GateResult(False, f"FAIL: {verdict}: retrieval quality dropped")
    if measured > gate.recorded_ndcg10 + gate.margin:
        return GateResult(True, f"PASS: {verdict}: better than recorded; consider raising eval.gate.recorded_ndcg10")
    return GateResult(True, f"PASS: {verdict}")
