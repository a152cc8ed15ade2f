"""Index roots as filesystem URIs (pyarrow), exercised with `file://`: the same code path as s3://."""

from __future__ import annotations

import pytest

from indexes.layout import IndexDirectory, IndexNotFoundError
from indexes.storage import (
    RemoteIndexes,
    anchor,
    check_readable,
    index_names,
    is_uri,
    locate,
    mirror_current,
    push_version,
)

pytestmark = pytest.mark.unit


def local_version(root, name: str, text: str) -> tuple[IndexDirectory, str]:
    directory = IndexDirectory(root, name)
    version, partial = directory.begin_version()
    (partial / "chunks.txt").write_text(text)
    (partial / "manifest.json").write_text("{}")
    (partial / "vectors").mkdir()
    (partial / "vectors" / "index.faiss").write_text(text)
    directory.publish(version, partial)
    return directory, version


def test_push_then_read_back_through_a_per_node_cache(tmp_path):
    uri = f"file://{tmp_path / 'bucket'}"
    remote = RemoteIndexes(uri)
    directory, first = local_version(tmp_path / "staging", "docs", "one")
    push_version(remote, directory, first, keep=2)
    assert remote.current_version("docs") == first and remote.versions("docs") == [first]

    location = locate(uri, "docs", cache=tmp_path / "cache")
    path = location.local_path(location.current_version())
    assert path == tmp_path / "cache" / "docs" / first and (path / "vectors" / "index.faiss").read_text() == "one"
    assert location.local_path(first) == path  # downloaded once
    assert check_readable(uri, "docs") == first


def test_versions_are_pruned_remotely_and_current_is_kept(tmp_path):
    remote = RemoteIndexes(f"file://{tmp_path / 'bucket'}")
    pushed = []
    for text in ("a", "b", "c"):
        directory, version = local_version(tmp_path / "staging", "docs", text)
        push_version(remote, directory, version, keep=2)
        pushed.append(version)
    assert remote.versions("docs") == pushed[1:] and remote.current_version("docs") == pushed[-1]


def test_a_fresh_staging_copy_starts_from_the_remote_current(tmp_path):
    remote = RemoteIndexes(f"file://{tmp_path / 'bucket'}")
    built, version = local_version(tmp_path / "machine-a", "docs", "from a")
    push_version(remote, built, version, keep=3)
    elsewhere = IndexDirectory(tmp_path / "machine-b", "docs")
    assert mirror_current(remote, elsewhere) == version
    assert elsewhere.current_version() == version
    assert (elsewhere.current_path() / "chunks.txt").read_text() == "from a"


def test_unreadable_roots_are_named(tmp_path):
    with pytest.raises(IndexNotFoundError, match=r"'docs' has no published version at .*nowhere/docs"):
        check_readable(tmp_path / "nowhere", "docs")
    with pytest.raises(IndexNotFoundError, match="has no published version at file://"):
        check_readable(f"file://{tmp_path}/empty", "docs")
    directory, version = local_version(tmp_path / "local", "docs", "x")
    (directory.versions_path / version / "manifest.json").unlink()
    with pytest.raises(IndexNotFoundError, match="not readable"):
        check_readable(tmp_path / "local", "docs")


def test_roots_are_anchored_unless_they_are_uris(tmp_path):
    assert is_uri("s3://bucket/x") and not is_uri("relative/dir")
    assert anchor("s3://bucket/x?region=eu", tmp_path) == "s3://bucket/x?region=eu"
    assert anchor("idx", tmp_path) == str(tmp_path / "idx")


def test_published_indexes_are_listed_and_dropped_locally_and_under_a_uri(tmp_path):
    """What a discovering retriever serves (indexes with a CURRENT, valid names only), and what
    `rayrag index drop` leaves: nothing, CURRENT gone first."""
    from indexes.config import IndexesConfig
    from pipelines.config import IndexJobConfig
    from pipelines.index_job import drop_index

    root = tmp_path / "local"
    local_version(root, "docs", "one")
    local_version(root, "more", "two")
    (root / "half").mkdir()  # no CURRENT: nothing published yet
    (root / ".hidden").mkdir()
    assert index_names(root) == ["docs", "more"] and index_names(tmp_path / "absent") == []
    assert len(drop_index(IndexesConfig(root=str(root)), IndexJobConfig(name="docs"))) == 1
    assert index_names(root) == ["more"] and not (root / "docs").exists()

    uri = f"file://{tmp_path / 'bucket'}"
    remote = RemoteIndexes(uri)
    for name in ("docs", "more"):
        directory, version = local_version(tmp_path / "staging", name, name)
        push_version(remote, directory, version, keep=2)
    assert index_names(uri) == ["docs", "more"]
    assert len(drop_index(IndexesConfig(root=uri), IndexJobConfig(name="docs"))) == 1
    assert index_names(uri) == ["more"] and not (tmp_path / "bucket" / "docs").exists()
