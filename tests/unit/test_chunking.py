from __future__ import annotations

from itertools import pairwise

import pytest

from pipelines.chunking import Element, char_windows, chunk_document, clean_text, layout, sections
from pipelines.config import ChunkerConfig

pytestmark = pytest.mark.unit

PARAGRAPH = "Python is an easy to learn, powerful programming language with efficient data structures. "
ELEMENTS = [
    Element("1. Whetting Your Appetite¶", "Title", 1),
    Element(PARAGRAPH * 6, "NarrativeText", 1),
    Element("1.1. Why   Python?", "Title", 2),
    Element(PARAGRAPH * 30, "NarrativeText", 2),
    Element("logo", "Image", 2),
    Element(">>> print('hi')\nhi", "CodeSnippet", 3),
]


def test_clean_text_drops_permalinks_and_extra_space_but_keeps_lines():
    assert clean_text("  Title¶ ") == "Title"
    assert clean_text("a  \t b\n\n\n  c") == "a b\nc"


def test_layout_records_where_each_element_sits_and_drops_images():
    text, blocks = layout(ELEMENTS)
    assert "logo" not in text
    assert all(text[b.start : b.end] == b.text for b in blocks)
    assert [b.is_title for b in blocks] == [True, False, True, False, False]


def test_by_title_starts_a_section_at_each_heading():
    _, blocks = layout(ELEMENTS)
    found = sections(blocks, "by_title")
    assert [s.title for s in found] == ["1. Whetting Your Appetite", "1.1. Why Python?"]
    assert sections(blocks, "window")[0].title is None


def test_chunks_respect_size_and_overlap_and_their_offsets_are_exact():
    config = ChunkerConfig(size=300, overlap=60, min_chars=10)
    chunks = chunk_document("tutorial/appetite.html", ELEMENTS, config, title="Appetite")
    text, _ = layout(ELEMENTS)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk.text) <= 300
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.title == "Appetite" and chunk.source == "tutorial/appetite.html"
    second_section = [c for c in chunks if c.section == "1.1. Why Python?"]
    for before, after in pairwise(second_section):
        assert after.start < before.end, "consecutive windows overlap"
        assert (not after.text[0].isspace() and after.text[0].isalnum()) or after.text[0] in ">('"
    assert chunks[0].page == 1 and second_section[0].page == 2  # the page where the chunk starts


def test_every_character_of_a_section_is_covered():
    text = " ".join(f"word{i}" for i in range(500))
    spans = char_windows(text, 0, len(text), 120, 30)
    covered = set()
    for start, end in spans:
        covered.update(range(start, end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_chunk_ids_are_stable_and_change_with_text_or_source():
    config = ChunkerConfig(size=300, overlap=60)
    first = chunk_document("a.md", ELEMENTS, config)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in chunk_document("a.md", ELEMENTS, config)]
    assert {c.chunk_id for c in first}.isdisjoint(c.chunk_id for c in chunk_document("b.md", ELEMENTS, config))
    edited = [Element("Different words entirely here.", "Title", 1), *ELEMENTS[1:]]
    assert first[0].chunk_id != chunk_document("a.md", edited, config)[0].chunk_id
    assert len({c.chunk_id for c in first}) == len(first)


def test_small_pieces_are_dropped_and_title_falls_back_to_the_file_name():
    chunks = chunk_document("notes/todo.txt", [Element("tiny", "NarrativeText")], ChunkerConfig(min_chars=40))
    assert chunks == []
    chunks = chunk_document("notes/todo.txt", [Element(PARAGRAPH, "NarrativeText")], ChunkerConfig())
    assert chunks[0].title == "todo" and chunks[0].section is None


def test_token_windows_use_the_embedders_tokenizer():
    from indexes.embedder import EmbedderConfig
    from pipelines.stages import _token_offsets

    offsets = _token_offsets(EmbedderConfig())
    config = ChunkerConfig(unit="tokens", size=64, overlap=16, min_chars=1)
    chunks = chunk_document("a.md", ELEMENTS, config, token_offsets=offsets)
    assert len(chunks) > 3
    assert all(len(offsets(c.text)) <= 64 for c in chunks)
    text, _ = layout(ELEMENTS)
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_a_hit_grows_to_its_whole_section_from_the_stored_overlapping_windows(tmp_path):
    """Small to big: the windows of one section, overlaps and all, merge back into the section's text."""
    from indexes.store import ChunkStore

    config = ChunkerConfig(size=300, overlap=60, min_chars=10)
    chunks = chunk_document("tutorial/appetite.html", ELEMENTS, config)
    text, blocks = layout(ELEMENTS)
    longest = max(sections(blocks, "by_title"), key=lambda s: s.end - s.start)
    windows = [c for c in chunks if c.section == longest.title]
    assert len(windows) > 3  # several overlapping windows to merge
    store = ChunkStore(tmp_path / "chunks.sqlite")
    store.add(chunks)
    hit = windows[2]
    grown = store.section_of(hit)
    assert grown.text == text[windows[0].start : windows[-1].end]
    assert (grown.chunk_id, grown.start, grown.end) == (hit.chunk_id, windows[0].start, windows[-1].end)
    assert all(grown.text[c.start - grown.start : c.end - grown.start] == c.text for c in windows)
    store.close()
