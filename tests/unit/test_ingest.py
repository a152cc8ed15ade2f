from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipelines.config import ParseConfig
from pipelines.ingest import ParseError, parse_bytes
from tests.conftest import REPO

pytestmark = pytest.mark.unit
CONFIG = ParseConfig()


def parse(path):
    return parse_bytes(path.read_bytes(), path.name, CONFIG)


def test_html_keeps_the_page_title_and_drops_navigation(sample_dir):
    document = parse(sample_dir / "library" / "fnmatch.html")
    text = " ".join(e.text for e in document.elements)
    assert document.title.startswith("fnmatch")
    assert "Unix filename pattern matching" in text
    assert "Navigation" not in text and "previous |" not in text
    assert any(e.category == "Title" for e in document.elements)


def test_pdf_text_layer_has_page_numbers(sample_dir):
    document = parse(sample_dir / "venv.pdf")
    assert "virtual environment" in " ".join(e.text for e in document.elements).lower()
    assert {e.page for e in document.elements} >= {1, 2}


def test_docx_and_markdown_have_headings(sample_dir):
    for name, heading in [("stdlib.docx", "Brief Tour of the Standard Library"), ("whatnow.md", "What Now?")]:
        document = parse(sample_dir / name)
        assert any(e.category == "Title" and heading in e.text for e in document.elements), name


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("junk.txt", bytes(range(256)) * 8, "binary content in a text file"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage", "corrupt pdf"),
        ("broken.docx", b"PK\x03\x04 not really a zip", "could not parse docx"),
        ("picture.png", b"\x89PNG\r\n", "unsupported extension '.png'"),
        ("blank.md", b"   \n\n  \n", "no text extracted"),
    ],
)
def test_bad_files_raise_a_parse_error_with_the_reason(name, data, reason):
    with pytest.raises(ParseError, match=reason):
        parse_bytes(data, name, CONFIG)


def test_non_utf8_text_is_decoded_with_a_warning():
    text = "Le café est très bon. Les élèves étudient la programmation en Python avec plaisir."
    document = parse_bytes(text.encode("latin-1"), "notes.txt", CONFIG)
    assert "café" in document.elements[0].text
    assert document.warnings and document.warnings[0].startswith("not UTF-8: decoded as")


def test_parsing_never_touches_the_network(tmp_path, sample_dir):
    """In a fresh process (nothing cached) with every socket connect refused, all formats still parse."""
    script = textwrap.dedent(
        f"""
        import socket, sys
        def refuse(self, *args, **kwargs):
            raise RuntimeError(f"network access attempted: {{args}}")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from pipelines.config import ParseConfig
        from pipelines.ingest import parse_bytes
        root = Path({str(sample_dir)!r})
        for name in ["tutorial/appetite.html", "whatnow.md", "venv.pdf", "stdlib.docx"]:
            document = parse_bytes((root / name).read_bytes(), name, ParseConfig())
            print(name, len(document.elements))
        prose = "A heading\\n\\nThis is a paragraph that the text heuristics must classify with spaCy."
        print("txt", len(parse_bytes(prose.encode(), "a.txt", ParseConfig()).elements))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no HF_HUB_OFFLINE etc.: the code sets them
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "network access attempted" not in done.stderr
    assert done.stdout.count("\n") == 5


def test_a_parse_process_never_imports_torch_and_can_still_import_it(sample_dir):
    """thinc imports torch on import when it is installed; a parse actor runs spaCy's numpy pipeline
    only, so every format parses (the text heuristics included) with torch never imported, and a
    later `import torch` (any other user of the process) still works."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from pipelines.config import ParseConfig
        from pipelines.ingest import parse_bytes
        root, config = Path({str(sample_dir)!r}), ParseConfig(html_text_heuristics=True)
        for name in ["tutorial/appetite.html", "whatnow.md", "venv.pdf", "stdlib.docx"]:
            assert parse_bytes((root / name).read_bytes(), name, config).elements, name
        prose = "A heading\\n\\nThis is a paragraph that the text heuristics must classify with spaCy."
        assert parse_bytes(prose.encode(), "a.txt", config).elements
        print("torch imported:", "torch" in sys.modules)
        import torch
        print("then importable:", torch.zeros(2).sum().item() == 0)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == ["torch imported: False", "then importable: True"]


def test_html_skips_the_spacy_text_test_and_its_chunks_stay_the_same(sample_dir, monkeypatch):
    """The narrative-text test (spaCy) only picks NarrativeText over Text, which no chunk depends
    on: skipped by default, the sample's HTML and Markdown give the same chunks as with it."""
    from unstructured.partition.html import parser

    from pipelines.chunking import chunk_document
    from pipelines.config import ChunkerConfig

    files = sorted(p for p in sample_dir.rglob("*") if p.suffix in {".html", ".md"})

    def chunks(config):
        out = []
        for path in files:
            document = parse_bytes(path.read_bytes(), path.name, config)
            out += [(c.text, c.title, c.section) for c in chunk_document(path.name, document.elements,
                                                                          ChunkerConfig(), document.title)]  # fmt: skip
        return out

    with_spacy = chunks(ParseConfig(html_text_heuristics=True))
    asked = []
    narrative = parser.is_possible_narrative_text
    monkeypatch.setattr(parser, "is_possible_narrative_text", lambda text: asked.append(text) or narrative(text))
    without = chunks(CONFIG)
    assert not asked and len(without) > 30
    assert without == with_spacy
    categories = {e.category for e in parse(sample_dir / "library" / "glob.html").elements}
    assert "NarrativeText" not in categories and {"Title", "UncategorizedText"} <= categories


def test_no_document_is_run_through_language_detection(sample_dir, monkeypatch):
    """unstructured's language tag (langdetect, a third of an HTML page's parse time) is never kept
    in a chunk, so no parser asks for it; the text file and the PDF name English, as before."""
    from unstructured.partition.common import lang

    def detect(*args, **kwargs):
        raise AssertionError("language detection ran")

    monkeypatch.setattr(lang, "detect_langs", detect)
    files = [p for p in sample_dir.rglob("*") if p.suffix in {".html", ".md", ".docx", ".pdf"}]
    assert {p.suffix for p in files} == {".html", ".md", ".docx", ".pdf"}
    for path in files:
        assert parse(path).elements, path.name
    assert parse_bytes(b"Plain notes about Python.", "notes.txt", CONFIG).elements
