"""`rayrag eval conversations`: does retrieval for a follow-up turn find its answer?

The set is frozen in `data/eval/python-faq-dialogues.jsonl`, written before any conversation query
was built or tuned. Each dialogue has two turns over the python-faq pages. The second turn is
elliptical ("And dictionaries?") and its gold section is not the first turn's. Each dialogue also
carries a standalone wording of the second turn.

Each second turn is searched three ways, with the serving retriever's configured mode, on the same
index as `rayrag eval retrieval`:

- **alone**: the last message by itself, which is what retrieval did before follow-ups were handled;
- **conversation**: the query that serving's follow-up stage (serving/followups.py) builds from the
  conversation;
- **standalone**: the standalone wording, which is the ceiling.

The figure is recall@10 of the second turn's gold section, and its ratio to the standalone recall
(the target is at least 0.8). The assistant's first answer in each conversation is the opening of
the first turn's gold section, as a grounded answer would quote it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import Field, ValidationError

from core.strict import StrictModel
from evaluation import provenance
from evaluation.beir import Dataset, DatasetError, read_jsonl
from evaluation.config import EvalSettings
from serving.followups import FollowupQueries
from serving.generator.protocol import Message
from serving.protocol import SearchRequest

DIALOGUES = Path("data/eval/python-faq-dialogues.jsonl")
ANSWER_CHARS = 300  # of the first turn's gold section, as the assistant's reply
TARGET = 0.8  # conversation recall / standalone recall
WAYS = ("alone", "conversation", "standalone")
SPLITS = ("dev", "test")

Search = Callable[[str], Awaitable[list[str]]]  # query -> document ids, best first


class DialogueTurn(StrictModel):
    text: str = Field(min_length=1)
    gold: str = Field(min_length=1)  # the corpus document that answers it


class Dialogue(StrictModel):
    id: str = Field(min_length=1)
    turns: list[DialogueTurn] = Field(min_length=2, max_length=8)
    standalone: str = Field(min_length=1)  # the last turn, asked without the conversation


def read_dialogues(path: Path, corpus: dict[str, dict] | None = None) -> list[Dialogue]:
    """The dialogues of a JSON-lines file; a bad line, or a gold missing from `corpus`, is named by
    file and line."""
    dialogues = []
    for number, row in enumerate(read_jsonl(Path(path), ("id", "standalone")), 1):
        try:
            dialogue = Dialogue.model_validate(row)
        except ValidationError as exc:
            raise DatasetError(f"{path}: dialogue {number} ({row['id']!r}): {exc.errors()[0]['msg']}") from None
        missing = [t.gold for t in dialogue.turns if corpus is not None and t.gold not in corpus]
        if missing:
            raise DatasetError(f"{path}: dialogue {row['id']!r}: gold {missing[0]!r} is not in the corpus")
        dialogues.append(dialogue)
    return dialogues


def fingerprint(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conversation_of(dialogue: Dialogue, corpus: dict[str, dict]) -> list[Message]:
    """The dialogue as chat messages, each earlier turn answered with the opening of its gold section."""
    messages: list[Message] = []
    for turn in dialogue.turns[:-1]:
        answer = corpus.get(turn.gold, {}).get("text", "")[:ANSWER_CHARS] or "I do not know."
        messages += [Message(role="user", content=turn.text), Message(role="assistant", content=answer)]
    return [*messages, Message(role="user", content=dialogue.turns[-1].text)]


async def score_dialogues(
    dialogues: list[Dialogue], corpus: dict[str, dict], search: Search, followups: FollowupQueries,
    splits: dict[str, str] | None = None, at: int = 10,
) -> dict:  # fmt: skip
    """Recall@`at` of each dialogue's last turn, searched each of the three ways (module docstring),
    over all dialogues and per split (`splits`: dialogue id -> dev or test)."""
    rows = []
    for dialogue in dialogues:
        followup = await followups.query(conversation_of(dialogue, corpus))
        asked = {"alone": dialogue.turns[-1].text, "conversation": followup.query, "standalone": dialogue.standalone}
        gold = dialogue.turns[-1].gold
        ranks = {way: _rank(await search(query), gold) for way, query in asked.items()}
        split = (splits or {}).get(dialogue.id)
        rows.append({"id": dialogue.id, "split": split, "gold": gold, "query": followup.query, "by": followup.by,
                     "rank": ranks})  # fmt: skip
    groups = {"all": rows} | {name: [r for r in rows if r["split"] == name] for name in SPLITS}
    figures = {name: _figures(group, at) for name, group in groups.items() if group}
    return {"dialogues": len(rows), "at": at, "target": TARGET, **figures["all"], "splits": figures, "rows": rows}


def _figures(rows: list[dict], at: int) -> dict:
    recall = {way: _recall([row["rank"][way] for row in rows], at) for way in WAYS}
    ratio = recall["conversation"] / recall["standalone"] if recall["standalone"] else 0.0
    return {"dialogues": len(rows), "recall": recall, "ratio": round(ratio, 4), "met": ratio >= TARGET}


def pages_by_split(halves: dict[str, Dataset]) -> dict[str, str]:
    """Page -> split, from each split's judged answers (its top grade): the dataset's own split by page."""
    pages = {}
    for split, half in halves.items():
        for docs in half.qrels.values():
            top = max(docs.values())
            pages |= {doc.split("#")[0]: split for doc, grade in docs.items() if grade == top}
    return pages


def page_splits(dialogues: list[Dialogue], pages: dict[str, str]) -> dict[str, str]:
    """Each dialogue's split: the one its last gold's page belongs to in the dataset (`pages`: page
    -> dev or test, from the dataset's own split by page), so tuning on dev leaves test held out."""
    return {d.id: pages[d.turns[-1].gold.split("#")[0]] for d in dialogues if d.turns[-1].gold.split("#")[0] in pages}


def _rank(documents: list[str], gold: str) -> int | None:
    return documents.index(gold) + 1 if gold in documents else None


def _recall(ranks: list[int | None], at: int) -> float:
    return round(sum(r is not None and r <= at for r in ranks) / len(ranks), 4) if ranks else 0.0


def evaluate_conversations(
    dataset: Dataset, path: Path, config: EvalSettings, generate=None, pages: dict[str, str] | None = None
) -> dict:
    """Index the dataset (as `rayrag eval retrieval` does, incrementally), score the dialogues at
    `path` with the configured retriever mode, and return the report. `generate` is the chain's
    generator for model rewrites (None: the follow-up stage's user turns); `pages` maps the
    dataset's pages to its dev/test split."""
    from evaluation.retrieval import index_dataset, open_retriever

    dialogues = read_dialogues(path, dataset.corpus)
    name, keys = index_dataset(dataset, config)
    retriever = open_retriever(config, name, None)
    mode = config.serve.retriever.mode

    async def search(query: str) -> list[str]:
        result = await retriever.search(SearchRequest(query=query, index=name, top_k=config.eval.depth, mode=mode))
        return list(dict.fromkeys(keys[c.source] for c in result.chunks if c.source in keys))

    followups = FollowupQueries(config.serve.gateway.followups, generate)
    splits = page_splits(dialogues, pages or {})
    try:
        scored = asyncio.run(score_dialogues(dialogues, dataset.corpus, search, followups, splits))
    finally:
        retriever.close()
    return {
        "dataset": dataset.name, "dialogues_file": str(path), "sha256": fingerprint(path), "mode": mode,
        "followups": config.serve.gateway.followups.model_dump(), "rewriter": "model" if generate else "turns",
        "embedder": config.indexes.embedder.model, "measured_at": provenance.now(), "command": provenance.command(),
    } | scored  # fmt: skip


def write_report(report: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def summary(report: dict) -> str:
    lines = [f"{report['dialogues']} dialogues, mode {report['mode']}, rewriter {report['rewriter']}: "
             f"second-turn recall@{report['at']} (ratio = with the conversation / standalone, target {TARGET})"]  # fmt: skip
    for name, figures in report["splits"].items():
        recall = figures["recall"]
        lines.append(f"  {name:<4} ({figures['dialogues']:>2}): alone {recall['alone']:.3f}, with the conversation "
                     f"{recall['conversation']:.3f}, standalone {recall['standalone']:.3f}; ratio {figures['ratio']:.2f}")  # fmt: skip
    return "\n".join(lines)
