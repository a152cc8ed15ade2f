"""Labelled retrieval data in the BEIR layout: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.

The layout every IR toolkit reads, so a user can evaluate on their own data (or a BEIR dataset
downloaded elsewhere) by pointing at a directory. Reading checks every line and names the file and
line of the first bad one, instead of failing later with a KeyError deep in the metrics.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.config import EvalError


class DatasetError(EvalError):
    """A dataset directory that is missing a file or has a malformed line."""


@dataclass
class Dataset:
    name: str
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> graded relevance
    meta: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        """SHA-256 of the corpus, queries and judgements: two runs scored the same data exactly when
        their fingerprints match (the gate's recorded figure is only comparable on the same one)."""
        body = json.dumps([self.corpus, self.queries, self.qrels], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()

    def subset(self, queries: int, distractors: int, seed: int = 0) -> Dataset:
        """`queries` judged queries and every document judged for them, plus `distractors` others:
        small enough for CI, still a search among non-relevant documents."""
        if queries >= len(self.qrels) and distractors >= len(self.corpus):
            return self  # everything kept: the dataset itself, under its own name
        rng = random.Random(seed)
        kept = sorted(rng.sample(sorted(self.qrels), min(queries, len(self.qrels))))
        judged = {doc for q in kept for doc in self.qrels[q]}
        others = sorted(set(self.corpus) - judged)
        extra = set(rng.sample(others, min(distractors, len(others))))
        corpus = {d: v for d, v in self.corpus.items() if d in judged or d in extra}
        return Dataset(
            f"{self.name}-subset",
            corpus,
            {q: self.queries[q] for q in kept},
            {q: self.qrels[q] for q in kept},
            self.meta | {"subset_of": self.name, "seed": seed},
        )


def write_dataset(dataset: Dataset, directory: Path, splits: dict[str, set[str]] | None = None) -> Path:
    """BEIR layout; `splits` names the queries judged in each `qrels/<split>.tsv` (default: all in `test`)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "corpus.jsonl").open("w") as out:
        for doc_id, doc in dataset.corpus.items():
            out.write(json.dumps({"_id": doc_id, "title": doc.get("title", ""), "text": doc["text"]}) + "\n")
    with (directory / "queries.jsonl").open("w") as out:
        for query_id, text in dataset.queries.items():
            out.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (directory / "qrels").mkdir(exist_ok=True)
    for split, judged in (splits or {"test": set(dataset.qrels)}).items():
        with (directory / "qrels" / f"{split}.tsv").open("w", newline="") as out:
            writer = csv.writer(out, delimiter="\t", lineterminator="\n")
            writer.writerow(["query-id", "corpus-id", "score"])
            for query_id, docs in dataset.qrels.items():
                if query_id in judged:
                    writer.writerows([query_id, doc_id, grade] for doc_id, grade in docs.items())
    (directory / "dataset.json").write_text(json.dumps({"name": dataset.name} | dataset.meta, indent=1))
    return directory


def read_dataset(directory: Path, split: str = "test") -> Dataset:
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"dataset directory {directory} does not exist")
    corpus = {row["_id"]: {"title": row.get("title") or "", "text": row["text"]}
              for row in read_jsonl(directory / "corpus.jsonl", ("_id", "text"))}  # fmt: skip
    queries = {row["_id"]: row["text"] for row in read_jsonl(directory / "queries.jsonl", ("_id", "text"))}
    qrels = _qrels(directory / "qrels" / f"{split}.tsv", queries, corpus)
    meta_path = directory / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["split"] = split
    return Dataset(meta.pop("name", directory.name), corpus, {q: queries[q] for q in qrels}, qrels, meta)


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Objects of a JSON-lines file, each with the `required` string fields; the first bad line is
    named by file and line number."""
    if not path.exists():
        raise DatasetError(f"{path} is missing")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        missing = [key for key in required if not isinstance(row, dict) or not isinstance(row.get(key), str)]
        if missing:
            raise DatasetError(f"{path}:{number}: missing string field(s) {', '.join(missing)}")
        rows.append(row)
    return rows


def _qrels(path: Path, queries: dict, corpus: dict) -> dict[str, dict[str, int]]:
    if not path.exists():
        present = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise DatasetError(f"{path} is missing (splits here: {', '.join(present) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if number == 1 and row[:1] == ["query-id"]:
                continue
            if len(row) != 3 or not row[2].lstrip("-").isdigit():
                raise DatasetError(f"{path}:{number}: expected query-id<TAB>corpus-id<TAB>integer score")
            query, doc, grade = row[0], row[1], int(row[2])
            if query not in queries or doc not in corpus:
                raise DatasetError(f"{path}:{number}: unknown {'query' if query not in queries else 'document'} id")
            if grade > 0:
                qrels.setdefault(query, {})[doc] = grade
    if not qrels:
        raise DatasetError(f"{path} judges no document relevant")
    return qrels
