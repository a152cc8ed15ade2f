from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from indexes.layout import IndexDirectory, IndexLockedError, IndexNotFoundError
from tests.conftest import REPO

pytestmark = pytest.mark.unit


def publish_one(directory: IndexDirectory) -> str:
    version, partial = directory.begin_version()
    (partial / "manifest.json").write_text("{}")
    directory.publish(version, partial)
    return version


def test_publish_flips_current_and_prune_keeps_the_newest(tmp_path):
    directory = IndexDirectory(tmp_path, "docs")
    with pytest.raises(IndexNotFoundError, match="has no version"):
        directory.current_path()
    versions = [publish_one(directory) for _ in range(4)]
    assert directory.current_version() == versions[-1]
    assert directory.versions() == versions
    assert directory.prune(keep=2) == versions[:2]
    assert directory.versions() == versions[2:]


def test_partial_versions_are_invisible_and_removed(tmp_path):
    directory = IndexDirectory(tmp_path, "docs")
    done = publish_one(directory)
    _, partial = directory.begin_version()  # a job that died here
    assert directory.versions() == [done] and directory.current_version() == done
    assert directory.remove_partials() == [partial.name]
    assert not partial.exists()


def test_a_second_writer_fails_fast(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from indexes.layout import IndexDirectory
        with IndexDirectory({str(tmp_path)!r}, "docs").writer_lock():
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with (
            pytest.raises(IndexLockedError, match="'docs' is being written by another job"),
            IndexDirectory(tmp_path, "docs").writer_lock(),
        ):
            pass
    finally:
        process.kill()
        process.wait()
    with IndexDirectory(tmp_path, "docs").writer_lock():  # released when the holder dies
        pass
