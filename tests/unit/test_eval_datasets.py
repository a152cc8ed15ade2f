"""The FAQ dataset builder, the BEIR reader/writer and the reST splitter, on small real-shaped inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.beir import DatasetError, read_dataset, write_dataset
from evaluation.datasets import resolve_dataset
from evaluation.faq_dataset import dataset_from_sources, split_by_page
from evaluation.rst import module_references, plain_text, split_sections

pytestmark = pytest.mark.unit

PROGRAMMING = """\
:tocdepth: 2

===============
Programming FAQ
===============

General Questions
=================

How do I read a file?
---------------------

Use :func:`open` and read it; see :mod:`io` and `the tutorial <https://docs.python.org>`_.

.. _faq-label:

Why is ``x`` unique?
--------------------

Because :class:`~collections.OrderedDict` keeps order, of course.

How do I read a file?
---------------------

Asked twice in the FAQ: the second copy must not become a second query.
"""
IO_PAGE = """\
:mod:`io` --- Core tools for working with streams
=================================================

The io module provides Python's main facilities for dealing with various types of I/O.
"""


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    (tmp_path / "faq").mkdir()
    (tmp_path / "library").mkdir()
    (tmp_path / "faq" / "programming.rst.txt").write_text(PROGRAMMING)
    (tmp_path / "library" / "io.rst.txt").write_text(IO_PAGE)
    return tmp_path


def test_sections_follow_headings_with_and_without_overlines():
    sections = split_sections(PROGRAMMING)
    assert [s.heading for s in sections] == [
        "Programming FAQ", "General Questions", "How do I read a file?", "Why is ``x`` unique?", "How do I read a file?"
    ]  # fmt: skip
    assert sections[2].body.startswith("Use :func:`open`")
    assert ".. _faq-label:" not in sections[2].body  # a label belongs to the next heading, not to this text
    assert sections[1].body == ""


def test_plain_text_keeps_what_a_reader_sees():
    assert (
        plain_text("Use :func:`open`, :class:`~a.B` and `docs <https://x>`_ with ``x``.")
        == "Use open, B and docs with x."
    )
    assert plain_text(":ref:`the tutorial <tut-files>`") == "the tutorial"
    assert module_references("see :mod:`io` and :mod:`os.path`, :mod:`io` again") == ["io", "os.path"]


def test_faq_questions_become_queries_with_their_answer_as_gold(sources):
    dataset = dataset_from_sources(sources)
    assert dataset.queries == {"q1": "How do I read a file?", "q2": "Why is x unique?"}  # the duplicate dropped
    gold = "faq/programming#2"
    assert dataset.qrels["q1"] == {gold: 2, "library/io#0": 1}  # the answer, and the page it links with :mod:
    assert dataset.qrels["q2"] == {"faq/programming#3": 2}
    assert "How do I read a file" not in dataset.corpus[gold]["text"]  # found by meaning, not by the heading
    assert dataset.corpus[gold]["title"] == "Programming FAQ"
    assert dataset.corpus["library/io#0"]["text"].startswith("io --- Core tools")  # other sections keep headings
    assert "faq/programming#1" not in dataset.corpus  # an empty section is not a document


def test_beir_layout_round_trips_and_resolves_by_path(sources, tmp_path):
    dataset = dataset_from_sources(sources)
    target = write_dataset(dataset, tmp_path / "out")
    assert (target / "qrels" / "test.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"
    again = resolve_dataset(str(target), tmp_path / "unused")
    assert (again.name, again.queries, again.qrels, again.corpus) == (
        dataset.name, dataset.queries, dataset.qrels, dataset.corpus
    )  # fmt: skip


def test_a_bad_line_is_named_with_its_file_and_line(sources, tmp_path):
    target = write_dataset(dataset_from_sources(sources), tmp_path / "out")
    with (target / "queries.jsonl").open("a") as handle:
        handle.write('{"_id": "q9"}\n')
    with pytest.raises(DatasetError, match=r"queries.jsonl:3: missing string field\(s\) text"):
        read_dataset(target)
    (target / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "x"}) + "\n")
    with pytest.raises(DatasetError, match=r"test.tsv:\d+: unknown query id"):
        read_dataset(target)
    with pytest.raises(DatasetError, match="neither a directory in BEIR layout nor one of: python-faq"):
        resolve_dataset("no-such-dataset", tmp_path)


def test_a_subset_keeps_every_judged_document_of_its_queries():
    mini = read_dataset(Path(__file__).parents[1] / "data" / "beir-mini")
    small = mini.subset(queries=3, distractors=5, seed=1)
    judged = {doc for docs in small.qrels.values() for doc in docs}
    assert len(small.queries) == 3 and judged <= set(small.corpus)
    assert len(small.corpus) == len(judged) + 5
    assert mini.subset(3, 5, seed=1).queries == small.queries  # a fixed seed, a fixed subset


def test_questions_split_by_whole_page_into_dev_and_test_halves(sources, tmp_path):
    """Neighbouring questions of one page never straddle the split: tuning on dev cannot see test's pages."""
    design = "Design FAQ\n==========\n\n" + "".join(
        f"Why is thing {n} so?\n-------------------\n\nBecause thing {n} was designed that way long ago.\n\n"
        for n in range(3)
    )
    (sources / "faq" / "design.rst.txt").write_text(design)
    dataset = dataset_from_sources(sources)
    halves = split_by_page(dataset)
    page = {q: next(d for d, g in docs.items() if g == 2).split("#")[0] for q, docs in dataset.qrels.items()}
    assert {page[q] for q in halves["dev"]} == {"faq/design"}  # the larger page first, to dev
    assert {page[q] for q in halves["test"]} == {"faq/programming"}
    assert halves["dev"] | halves["test"] == set(dataset.qrels) and not halves["dev"] & halves["test"]
    target = write_dataset(dataset, tmp_path / "out", halves)
    dev, test = read_dataset(target, "dev"), read_dataset(target, "test")
    assert set(dev.qrels) == halves["dev"] and set(test.qrels) == halves["test"]
    assert dev.corpus == test.corpus and (dev.meta["split"], test.meta["split"]) == ("dev", "test")
    with pytest.raises(DatasetError, match=r"train.tsv is missing \(splits here: dev, test\)"):
        read_dataset(target, "train")
