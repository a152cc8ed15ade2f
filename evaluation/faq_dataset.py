"""A labelled retrieval set built offline from real documentation: the Python 3.11 FAQ.

No BEIR or MS MARCO set installs offline here, but Debian's python3.11-doc ships the reST sources
of the whole documentation. Every FAQ heading that is a question becomes a query; the section it
heads (heading removed, so the answer must be found by meaning, not by copying the question) is the
gold passage, grade 2; library pages the answer links to with `:mod:` are grade 1. The corpus is
every section of every page, so the gold passage competes with ~6,000 others.

The questions are split by FAQ page, not by question (neighbouring questions of one page share
wording and answers): `dev` for tuning, `test` for every reported figure (`split_by_page`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from evaluation.beir import Dataset, write_dataset
from evaluation.rst import module_references, plain_text, split_sections
from pipelines.corpus import PACKAGE, unpack_python_docs, unpacked_version

NAME = "python-faq"
MIN_CHARS = 40  # the chunker's own floor: a shorter section would never be indexed
GOLD, LINKED = 2, 1


def build_faq_dataset(target: Path, sources: Path | None = None) -> Dataset:
    """Write the dataset in BEIR layout under `target`; `sources` is an unpacked `_sources`
    directory (default: download python3.11-doc)."""
    if sources is not None:
        dataset = dataset_from_sources(Path(sources))
        dataset.meta["package"] = f"unpacked sources at {Path(sources).resolve()}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = dataset_from_sources(unpack_python_docs(Path(tmp)) / "_sources")
            dataset.meta["package"] = f"{PACKAGE} {unpacked_version(Path(tmp)) or '(version unknown)'}"
    write_dataset(dataset, Path(target), split_by_page(dataset))
    return dataset


SPLITS = ("dev", "test")


def split_by_page(dataset: Dataset) -> dict[str, set[str]]:
    """Whole FAQ pages to `dev` or `test`, largest first, each to the half with fewer questions so far
    (ties to dev): fixed by the pages themselves, and about half the questions each."""
    pages: dict[str, set[str]] = {}
    for query_id, docs in dataset.qrels.items():
        gold = next(doc for doc, grade in docs.items() if grade == GOLD)
        pages.setdefault(gold.split("#")[0], set()).add(query_id)
    halves: dict[str, set[str]] = {split: set() for split in SPLITS}
    for page in sorted(pages, key=lambda p: (-len(pages[p]), p)):
        smaller = min(SPLITS, key=lambda split: len(halves[split]))
        halves[smaller] |= pages[page]
    return halves


def dataset_from_sources(sources: Path) -> Dataset:
    corpus: dict[str, dict[str, str]] = {}
    first_section: dict[str, str] = {}  # page ("library/os") -> doc id of its first section
    questions: list[tuple[str, str, list[str]]] = []  # (question, gold doc id, referenced modules)
    for path in sorted(sources.rglob("*.rst.txt")):
        page = path.relative_to(sources).as_posix().removesuffix(".rst.txt")
        sections = split_sections(path.read_text(errors="replace"))
        title = sections[0].heading if sections else page
        for section in sections:
            doc_id = f"{page}#{section.position}"
            is_question = page.startswith("faq/") and section.heading.endswith("?")
            text = plain_text(section.body if is_question else f"{section.heading}\n\n{section.body}")
            if len(text) < MIN_CHARS:
                continue
            corpus[doc_id] = {"title": title, "text": text}
            first_section.setdefault(page, doc_id)
            if is_question:
                questions.append((section.heading, doc_id, module_references(section.body)))
    return _labelled(corpus, first_section, questions)


def _labelled(corpus: dict, first_section: dict[str, str], questions: list[tuple[str, str, list[str]]]) -> Dataset:
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    for question, gold, modules in questions:
        key = " ".join(question.lower().split())
        if key in seen:  # asked twice in the FAQ: one query, or the metrics would count it twice
            continue
        seen.add(key)
        query_id = f"q{len(queries) + 1}"
        queries[query_id] = plain_text(question)
        linked = {first_section[f"library/{m}"]: LINKED for m in modules if f"library/{m}" in first_section}
        qrels[query_id] = linked | {gold: GOLD}
    meta = {"source": "Debian python3.11-doc, _sources/**/*.rst.txt", "grades": {"2": "answer", "1": "linked page"}}
    return Dataset(NAME, corpus, queries, qrels, meta)
