"""Find a dataset by name or path: a BEIR-layout directory, or a dataset rayrag can build here."""

from __future__ import annotations

from pathlib import Path

from evaluation.beir import Dataset, DatasetError, read_dataset
from evaluation.faq_dataset import NAME as FAQ
from evaluation.faq_dataset import build_faq_dataset
from pipelines.corpus import CorpusUnavailable

BUILDABLE = {FAQ: build_faq_dataset}


def resolve_dataset(name_or_path: str, datasets_dir: Path, split: str = "test") -> Dataset:
    """A directory is read as it is; a buildable name is built once into `datasets_dir` (again when
    it was built before it had a `dev` split). `split` picks `qrels/<split>.tsv`."""
    path = Path(name_or_path)
    if path.is_dir():
        return read_dataset(path, split)
    if name_or_path in BUILDABLE:
        target = Path(datasets_dir) / name_or_path
        if not (target / "qrels" / "dev.tsv").exists():
            try:
                BUILDABLE[name_or_path](target)
            except CorpusUnavailable as exc:
                raise DatasetError(f"cannot build dataset {name_or_path!r}: {exc}") from None
        return read_dataset(target, split)
    raise DatasetError(
        f"dataset {name_or_path!r} is neither a directory in BEIR layout nor one of: {', '.join(BUILDABLE)}"
    )
