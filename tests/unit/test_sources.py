from __future__ import annotations

import pytest

from pipelines.config import SourceConfig
from pipelines.sources import SourceError, list_source, split_source
from tests.conftest import write_corpus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("s3://bucket/docs", ("s3", "bucket/docs", None)),
        ("s3://bucket/docs/**/*.pdf", ("s3", "bucket/docs", "**/*.pdf")),
        ("gs://bucket/a/b/*.html", ("gs", "bucket/a/b", "*.html")),
        ("/data/corpus", (None, "/data/corpus", None)),
        ("docs/*.md", (None, "docs", "*.md")),
        ("*.txt", (None, ".", "*.txt")),
    ],
)
def test_split_source_separates_scheme_base_and_glob(source, expected):
    assert split_source(source) == expected


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(
        tmp_path / "corpus",
        {
            "a.md": "# A\n\ntext",
            "sub/b.txt": "text",
            "sub/deep/c.md": "# C",
            "logo.png": b"\x89PNG",
            "big.md": "x" * 5000,
        },
    )


def test_directory_listing_reports_unsupported_and_oversized_files(corpus):
    listing = list_source(str(corpus), SourceConfig(max_file_bytes=1000))
    assert [f.key for f in listing.files] == ["a.md", "sub/b.txt", "sub/deep/c.md"]
    reasons = {issue.path: issue.reason for issue in listing.skipped}
    assert reasons["logo.png"] == "unsupported extension '.png'"
    assert reasons["big.md"].startswith("5000 bytes is over the 1000-byte cap (source.max_file_bytes)")


def test_globs_and_excludes(corpus):
    assert [f.key for f in list_source(f"{corpus}/**/*.md", SourceConfig()).files] == [
        "a.md",
        "big.md",
        "sub/deep/c.md",
    ]
    assert [f.key for f in list_source(f"{corpus}/sub/*.txt", SourceConfig()).files] == ["b.txt"]
    keys = [f.key for f in list_source(str(corpus), SourceConfig(exclude=("sub/*",))).files]
    assert keys == ["a.md", "big.md"]


def test_file_uris_go_through_pyarrow_filesystems(corpus):
    listing = list_source(f"file://{corpus}/sub", SourceConfig())
    assert [f.key for f in listing.files] == ["b.txt", "deep/c.md"]
    with listing.filesystem.open_input_file(listing.files[0].path) as handle:
        assert handle.read() == b"text"


def test_a_single_file_is_a_source(corpus):
    listing = list_source(str(corpus / "a.md"), SourceConfig())
    assert [f.key for f in listing.files] == ["a.md"]


def test_missing_or_empty_sources_are_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        list_source(str(tmp_path / "nope"), SourceConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="has no files"):
        list_source(str(tmp_path / "empty"), SourceConfig())
    with pytest.raises(SourceError, match=r"matching '\*\.pdf'"):
        list_source(f"{tmp_path}/empty/*.pdf", SourceConfig())
