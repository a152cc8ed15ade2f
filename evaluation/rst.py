"""Split reStructuredText sources into sections, and flatten Sphinx markup to plain text.

Hand-written on purpose: docutils cannot parse the Sphinx sources on its own (every `:func:` role
and `.. versionadded::` directive is an error without Sphinx), and all the dataset needs is where
each heading is and the text under it. A heading is a line of text underlined (optionally also
overlined) by one punctuation character repeated at least as long as the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")
_LABEL = re.compile(r"^\.\. _[^:]+:\s*$")
_ROLE_WITH_TARGET = re.compile(r":[\w:.-]+:`([^`<]*?)\s*<[^`>]*>`")
_ROLE = re.compile(r":[\w:.-]+:`!?(~?)([^`]*)`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?")
_LITERAL = re.compile(r"``([^`]+)``")
_MODULE_REF = re.compile(r":mod:`[!~]?([\w.]+)`")


@dataclass(frozen=True)
class Section:
    heading: str
    body: str  # the text up to the next heading of any level, markup kept
    position: int  # 0-based order of the heading within its file


def _is_heading(lines: list[str], i: int) -> bool:
    text = lines[i].rstrip()
    if not text.strip() or _ADORNMENT.match(text) or i + 1 >= len(lines):
        return False
    underline = lines[i + 1].rstrip()
    return bool(_ADORNMENT.match(underline)) and len(underline) >= len(text.strip())


def split_sections(source: str) -> list[Section]:
    """Sections in file order; text before the first heading (metadata, labels) is dropped."""
    lines = source.splitlines()
    starts = [i for i in range(len(lines)) if _is_heading(lines, i)]
    sections = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        if n + 1 < len(starts) and end > 0 and _ADORNMENT.match(lines[end - 1].rstrip()):
            end -= 1  # the next heading's overline
        body = [line for line in lines[start + 2 : end] if not _LABEL.match(line)]
        sections.append(Section(lines[start].strip(), "\n".join(body).strip(), n))
    return sections


def plain_text(text: str) -> str:
    """Roles and links reduced to their visible text: ``:func:`len` `` -> ``len``."""
    text = _ROLE_WITH_TARGET.sub(r"\1", text)
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)  # ~a.B shows B
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def module_references(text: str) -> list[str]:
    """Modules named with `:mod:` in a section: the library pages an FAQ answer points to."""
    return list(dict.fromkeys(_MODULE_REF.findall(text)))
