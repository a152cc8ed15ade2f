"""The default corpus: the Python 3.11 documentation (PSF licence), from Debian's python3.11-doc.

`apt-get download` + `dpkg-deb -x` need no root and no install; where Debian packages cannot be
had, the small mixed-format sample committed in `data/sample/` is used instead.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from fnmatch import fnmatch
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "python3.11-doc"
HTML_DIR = Path("usr/share/doc/python3.11/html")
# Generated index pages: long lists of links that would crowd every search.
EXCLUDED = ("genindex*.html", "search.html", "py-modindex.html", "contents.html", "_*/*")
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
DONE_MARKER = ".complete"


class CorpusUnavailable(RuntimeError):
    """The Debian package could not be fetched or unpacked here."""


def default_source(corpus_dir: Path) -> str:
    """The Python docs, fetched once into `corpus_dir`; the committed sample if that fails."""
    target = Path(corpus_dir) / "python-3.11-docs"
    if _marker(target).exists():
        return str(target)
    try:
        fetch_python_docs(target)
    except CorpusUnavailable as exc:
        log.warning("default corpus unavailable (%s); indexing the bundled sample %s", exc, SAMPLE_DIR)
        return str(SAMPLE_DIR)
    return str(target)


def fetch_python_docs(target: Path) -> int:
    """Download and unpack python3.11-doc, keep its HTML pages; returns the page count."""
    with tempfile.TemporaryDirectory() as tmp:
        pages = _copy_pages(unpack_python_docs(Path(tmp)), target)
    _marker(target).write_text(f"{pages} pages from {PACKAGE}\n")
    return pages


def unpack_python_docs(workdir: Path) -> Path:
    """`apt-get download` + `dpkg-deb -x` python3.11-doc into `workdir`; returns its HTML root
    (which also holds the reST sources under `_sources/`)."""
    _run(["apt-get", "download", PACKAGE], cwd=str(workdir))
    debs = list(workdir.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise CorpusUnavailable(f"apt-get download {PACKAGE} produced no .deb")
    _run(["dpkg-deb", "-x", str(debs[0]), str(workdir / "root")], cwd=str(workdir))
    return workdir / "root" / HTML_DIR


def unpacked_version(workdir: Path) -> str | None:
    """The Debian version of the python3.11-doc that `unpack_python_docs` downloaded into `workdir`
    (its .deb is named `<package>_<version>_<arch>.deb`): a dataset built from it says which text it holds."""
    debs = sorted(Path(workdir).glob(f"{PACKAGE}_*.deb"))
    return debs[0].name.split("_")[1].replace("%3a", ":") if debs else None


def _marker(target: Path) -> Path:
    """Beside the corpus, not in it: the marker is not a document."""
    return target.with_name(target.name + DONE_MARKER)


def _copy_pages(html_root: Path, target: Path) -> int:
    if target.exists():
        shutil.rmtree(target)
    count = 0
    for page in sorted(html_root.rglob("*.html")):
        relative = page.relative_to(html_root).as_posix()
        if any(fnmatch(relative, pattern) for pattern in EXCLUDED):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, destination)
        count += 1
    return count


def _run(command: list[str], cwd: str) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise CorpusUnavailable(f"{' '.join(command)} failed: {detail.strip()[-300:]}") from exc
