"""A shared directory or a bucket is only as trusted as its writers: what a tampered or damaged
index store holds is refused with an error naming it, never followed."""

from __future__ import annotations

import numpy as np
import pytest

from indexes.backend_config import QdrantConfig
from indexes.backends import create_vector_index, open_vector_index
from indexes.layout import IndexDirectory, TamperedIndexError
from indexes.manifest import file_entries, verify_files
from indexes.storage import RemoteIndexes
from indexes.vector import read_meta, write_meta

pytestmark = pytest.mark.security


@pytest.mark.parametrize("pointer", ["../../../etc", "/etc/passwd", "20261130T093612412345Z-abcdef/../x", "v1"])
def test_a_current_that_is_not_a_version_id_is_refused(tmp_path, pointer):
    directory = IndexDirectory(tmp_path, "docs")
    directory.path.mkdir(parents=True)
    (directory.path / "CURRENT").write_text(pointer + "\n")
    with pytest.raises(TamperedIndexError, match="not a version id"):
        directory.current_version()
    with pytest.raises(TamperedIndexError, match="not a version id"):
        RemoteIndexes(f"file://{tmp_path}").current_version("docs")


def test_a_version_id_the_job_makes_is_accepted(tmp_path):
    directory = IndexDirectory(tmp_path, "docs")
    version, partial = directory.begin_version()
    directory.publish(version, partial)
    assert directory.current_version() == version == RemoteIndexes(f"file://{tmp_path}").current_version("docs")


def test_the_store_cannot_choose_a_qdrant_server_or_the_secret_sent_to_it(tmp_path, monkeypatch):
    path = tmp_path / "vectors"
    create_vector_index(path, 4, QdrantConfig(), "docs").close()
    meta = read_meta(path)
    meta["config"] |= {"url": "http://attacker.example:6333", "api_key_env": "AWS_SECRET_ACCESS_KEY"}
    write_meta(path, meta)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-send")
    with pytest.raises(TamperedIndexError, match="Qdrant server"):
        open_vector_index(path)
    with pytest.raises(TamperedIndexError):
        open_vector_index(path, QdrantConfig(url="http://qdrant.internal:6333", api_key_env="QDRANT_KEY"))


def test_an_embedded_version_opens_from_its_files_and_names_no_secret(tmp_path):
    path = tmp_path / "vectors"
    index = create_vector_index(path, 4, QdrantConfig(), "docs")
    index.add(np.arange(2), np.eye(2, 4, dtype=np.float32))
    index.close()
    opened = open_vector_index(path)
    try:
        assert opened.count == 2
    finally:
        opened.close()
    meta = read_meta(path)
    meta["config"]["api_key_env"] = "AWS_SECRET_ACCESS_KEY"
    write_meta(path, meta)
    with pytest.raises(TamperedIndexError, match=r"meta\.json"):
        open_vector_index(path)


def test_a_changed_or_missing_file_fails_verification(tmp_path):
    from indexes.manifest import Manifest

    version = tmp_path / "v"
    (version / "vectors").mkdir(parents=True)
    (version / "chunks.sqlite").write_bytes(b"chunks")
    (version / "vectors" / "index.faiss").write_bytes(b"vectors")
    manifest = Manifest.model_construct(files=file_entries(version))
    verify_files(version, manifest)
    (version / "vectors" / "index.faiss").write_bytes(b"vectorz")
    with pytest.raises(ValueError, match=r"vectors/index\.faiss differs"):
        verify_files(version, manifest)
    (version / "chunks.sqlite").unlink()
    with pytest.raises(ValueError, match=r"chunks\.sqlite is missing"):
        verify_files(version, manifest)


def test_file_roots_are_leased_with_a_lock_and_other_schemes_refuse_without_one(tmp_path):
    from indexes.layout import IndexLockedError
    from indexes.lease import remote_lease

    root = f"file://{tmp_path}"
    with (
        remote_lease(root, "docs", 60),
        pytest.raises(IndexLockedError, match="another job"),
        remote_lease(root, "docs", 60),
    ):
        pass
    with pytest.raises(IndexLockedError, match="single_writer"), remote_lease("gs://bucket/indexes", "docs", 60):
        pass
    with remote_lease("gs://bucket/indexes", "docs", 60, single_writer=True):
        pass
