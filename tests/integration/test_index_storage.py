"""Indexes on an object store: the index job uploads, the retriever downloads CURRENT and reloads.

The store is a real S3 API server on localhost (moto's server, from PyPI: no cloud is reachable
here), reached through pyarrow's S3 filesystem exactly as `s3://` is on a cluster.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from indexes.storage import RemoteIndexes
from serving.config import RetrieverConfig
from serving.protocol import SearchRequest
from serving.retriever import Retriever
from tests.conftest import write_corpus
from tests.integration.conftest import job_config, run_job
from tests.integration.serving_support import NEW_DOC, free_port, make_corpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_root(tmp_path_factory):
    """An S3 endpoint (moto_server) with credentials in the environment; yields an `s3://` root."""
    binary = str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    server = subprocess.Popen([binary, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
    root = f"s3://rayrag-test/indexes?endpoint_override=127.0.0.1:{port}&scheme=http&allow_bucket_creation=true"
    RemoteIndexes(root).fs.create_dir("rayrag-test")
    yield root
    server.terminate()
    server.wait(10)
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_index_job_publishes_to_s3_and_the_retriever_follows_current(ray_cluster, s3_root, tmp_path):
    corpus = make_corpus(tmp_path)
    config = job_config(tmp_path, **{"indexes.root": s3_root, "index_job.staging_dir": str(tmp_path / "staging")})
    first = run_job(config, corpus)
    remote = RemoteIndexes(s3_root)
    assert remote.current_version("test") == first.version
    assert remote.versions("test") == [first.version]

    cache = tmp_path / "node-cache"
    retriever = Retriever(RetrieverConfig(indexes=["test"], cache_dir=cache, reload_interval_s=3600), config.indexes)
    try:
        assert (cache / "test" / first.version / "manifest.json").is_file()  # downloaded once, opened locally
        write_corpus(corpus, NEW_DOC)
        shutil.rmtree(tmp_path / "staging")  # another machine: the job starts from the remote CURRENT
        second = run_job(config, corpus)
        assert second.parent_version == first.version and second.documents.unchanged > 0
        assert second.chunks.added < second.chunks.total  # incremental on the downloaded version
        assert retriever.reload_if_changed("test")
        hits = asyncio.run(retriever.search(SearchRequest(index="test", query="What is a glacier?", top_k=1)))
        assert hits.version == second.version and hits.chunks[0].source.endswith("glaciers.md")
    finally:
        retriever.close()


def test_a_root_without_the_index_is_named(s3_root):
    from indexes.layout import IndexNotFoundError
    from indexes.storage import check_readable

    with pytest.raises(IndexNotFoundError, match="'absent' has no published version at s3://"):
        check_readable(s3_root, "absent")


def test_two_writers_of_one_s3_index_cannot_race_on_current(ray_cluster, s3_root, tmp_path):
    """The lease is an object created with If-None-Match: * on the S3 server: while one job holds it
    another refuses, naming the holder; an expired lease (a killed job's) is taken over."""
    from indexes.layout import IndexLockedError
    from indexes.lease import remote_lease

    with remote_lease(s3_root, "leased", ttl_s=3600):
        with pytest.raises(IndexLockedError, match="being written by"), remote_lease(s3_root, "leased", ttl_s=3600):
            pass
        config = job_config(tmp_path, **{"indexes.root": s3_root, "index_job.name": "leased",
                                         "index_job.staging_dir": str(tmp_path / "staging")})  # fmt: skip
        with pytest.raises(IndexLockedError, match="being written by"):
            run_job(config, make_corpus(tmp_path))
    with remote_lease(s3_root, "leased", ttl_s=-1):  # released, then taken with a lease already expired
        pass
    with remote_lease(s3_root, "leased", ttl_s=-1), remote_lease(s3_root, "leased", ttl_s=3600):
        pass  # the second took over the expired one


def test_uploads_on_s3_land_where_the_index_job_lists_them(s3_root):
    """Documents over HTTP with `serve.gateway.ingest.root` on an object store: an upload added to an
    index lands in that index's source area on S3, the index job's listing finds it at that URI (its
    options, here the endpoint, kept: a `?` in a source URI is not a glob), the job's report is
    written and read back beside it, and deleting the upload empties the source area. (Parsing from
    S3 needs credentials on the workers, which a real cluster's nodes have and this test's do not.)"""
    from indexes.storage import write_text
    from pipelines.config import SourceConfig
    from pipelines.sources import list_source
    from serving.stores.files import FileStore

    files = FileStore(s3_root.replace("/indexes?", "/ingest?"))
    upload = files.save("acme", "../geysers.md", b"# Geysers\n\nOld Faithful erupts about every ninety minutes.\n", "x")
    files.attach("acme", "uploads", upload.id)
    assert files.attached("uploads") == {upload.id: f"{upload.id}/geysers.md"} and files.list("acme") == [upload]
    listing = list_source(files.source("uploads"), SourceConfig())
    assert [(f.key, f.size) for f in listing.files] == [(f"{upload.id}/geysers.md", upload.bytes)]
    write_text(files.report_location("job-1"), '{"version": "v1", "chunks": {"total": 1}}')  # as --report-out does
    assert files.report("job-1")["chunks"]["total"] == 1
    files.delete("acme", upload.id)
    assert files.attached("uploads") == {} and files.list("acme") == []
