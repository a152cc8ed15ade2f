"""`rayrag eval guardrails`: the input guardrails' block and false-positive rates on labelled sets.

Two sets, reported side by side: `prompts.jsonl`, written together with the patterns (a regression
set: it says the known shapes stay caught), and `heldout.jsonl`, attacks and benign questions that
nobody here wrote (see its `make_heldout.py`), frozen before the patterns were looked at again: its
rates are the honest estimate of what the detector does on prompts it was not built around.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from evaluation import provenance
from serving.checks.guardrails import Guardrails
from serving.config import GuardrailsConfig

SETS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "guardrails"
SETS = {"regression": SETS_DIR / "prompts.jsonl", "heldout": SETS_DIR / "heldout.jsonl"}


def rates(path: Path, guardrails: Guardrails) -> dict:
    """Block rate on the attacks, false-positive rate on the benign prompts, and by source."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    attacks = [r for r in rows if r["label"] == "injection"]
    benign = [r for r in rows if r["label"] == "benign"]
    blocked = {id(r) for r in rows if guardrails.check(r["text"]).any}
    by_source, totals = Counter(), Counter()
    for r in attacks:
        totals[r.get("source", "")] += 1
        by_source[r.get("source", "")] += id(r) in blocked
    return {
        "attacks": len(attacks), "benign": len(benign),
        "block_rate": round(sum(id(r) in blocked for r in attacks) / max(1, len(attacks)), 4),
        "false_positive_rate": round(sum(id(r) in blocked for r in benign) / max(1, len(benign)), 4),
        "blocked_by_source": {s: f"{by_source[s]}/{totals[s]}" for s in sorted(totals) if s},
    }  # fmt: skip


def measure(config: GuardrailsConfig | None = None) -> dict:
    guardrails = Guardrails(config or GuardrailsConfig())
    return {"measured_at": provenance.now(),
            "sets": {name: rates(path, guardrails) for name, path in SETS.items()}}  # fmt: skip
