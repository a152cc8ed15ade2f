"""`rayrag eval conversations`: the frozen multi-turn set, its scoring, and its errors (no index here:
search is a table; the integration tier runs the command on a real index)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evaluation.beir import Dataset, DatasetError
from evaluation.conversations import (
    DIALOGUES,
    conversation_of,
    fingerprint,
    page_splits,
    pages_by_split,
    read_dialogues,
    score_dialogues,
)
from rayrag.figures import CONVERSATIONS
from serving.config import FollowupConfig
from serving.followups import FollowupQueries
from tests.conftest import REPO

pytestmark = pytest.mark.unit
CORPUS = {"p#1": {"text": "Lists are arrays of pointers."}, "p#2": {"text": "Dicts are hash tables."},
          "q#1": {"text": "Tuples are immutable."}, "q#2": {"text": "Convert with list() and tuple()."}}  # fmt: skip


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _dialogue(id_, first, second, standalone="standalone"):
    return {"id": id_, "turns": [{"text": f"about {first}", "gold": first}, {"text": "And that?", "gold": second}],
            "standalone": standalone}  # fmt: skip


def test_the_frozen_set_has_thirty_elliptical_dialogues_whose_gold_moves_and_the_reports_match_it():
    dialogues = read_dialogues(REPO / DIALOGUES)
    assert len(dialogues) >= 30 and len({d.id for d in dialogues}) == len(dialogues)
    assert all(d.turns[-1].gold != d.turns[0].gold for d in dialogues)
    assert all(len(d.turns[-1].text) < len(d.standalone) + 40 for d in dialogues)
    for rewriter, path in CONVERSATIONS.items():  # a figure belongs to the set it was measured on
        report = json.loads((REPO / path).read_text())
        assert (report["sha256"], report["rewriter"]) == (fingerprint(REPO / DIALOGUES), rewriter)


def test_each_way_is_scored_over_all_and_per_split(tmp_path):
    dialogues = read_dialogues(_write(tmp_path, [_dialogue("a", "p#1", "p#2"), _dialogue("b", "q#1", "q#2")]), CORPUS)
    found = {"And that?": ["p#1"], "And that?\nabout p#1": ["p#2"], "And that?\nabout q#1": ["q#1", "x"],
             "standalone": ["p#2", "q#2"]}  # fmt: skip

    async def search(query: str) -> list[str]:
        return found.get(query, [])

    queries = FollowupQueries(FollowupConfig(rewrite="turns"), None)
    splits = page_splits(dialogues, {"p": "dev", "q": "test"})
    report = asyncio.run(score_dialogues(dialogues, CORPUS, search, queries, splits))
    assert report["recall"] == {"alone": 0.0, "conversation": 0.5, "standalone": 1.0}
    assert (report["ratio"], report["met"]) == (0.5, False)
    assert report["splits"]["dev"]["recall"]["conversation"] == 1.0 and report["splits"]["dev"]["met"]
    assert report["splits"]["test"]["recall"]["conversation"] == 0.0
    assert [row["rank"]["standalone"] for row in report["rows"]] == [1, 2]


def test_the_assistant_turn_quotes_the_first_gold_and_pages_take_their_split(tmp_path):
    [dialogue] = read_dialogues(_write(tmp_path, [_dialogue("a", "p#1", "p#2")]), CORPUS)
    messages = conversation_of(dialogue, CORPUS)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "about p#1"), ("assistant", "Lists are arrays of pointers."), ("user", "And that?"),
    ]  # fmt: skip
    halves = {"dev": Dataset("d", CORPUS, {"x": "q"}, {"x": {"p#2": 2, "q#1": 1}}),
              "test": Dataset("d", CORPUS, {"y": "q"}, {"y": {"q#2": 2}})}  # fmt: skip
    assert pages_by_split(halves) == {"p": "dev", "q": "test"}


@pytest.mark.parametrize("row, says", [
    ({"id": "a", "turns": [{"text": "one", "gold": "p#1"}], "standalone": "s"}, "dialogue 1 ('a')"),
    (_dialogue("b", "p#1", "nowhere#9"), "gold 'nowhere#9' is not in the corpus"),
    ({"id": "c", "standalone": "s"}, "dialogue 1 ('c')"),
])  # fmt: skip
def test_a_bad_dialogue_is_named_by_file_and_id(tmp_path, row, says):
    path = _write(tmp_path, [row])
    with pytest.raises(DatasetError, match=str(path)) as error:
        read_dialogues(path, CORPUS)
    assert says in str(error.value)
