"""Regenerate the non-HTML files of data/sample/ from the Python 3.11 documentation sources.

The text is the PSF-licensed Python tutorial (reStructuredText sources shipped in Debian's
python3.11-doc, `_sources/tutorial/*.rst.txt`); this script only changes its format, so the
tests see a real markdown file, a real text-layer PDF and a real DOCX. Needs fpdf2 and
python-docx: `python data/make_sample.py /usr/share/doc/python3.11/html/_sources/tutorial`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).parent / "sample"
UNDERLINE = re.compile(r"^([=\-~*^#])\1{3,}$")
ROLE = re.compile(r":[a-z:]+:`~?([^`<]+?)(?:\s*<[^>]+>)?`")


def sections(rst: str) -> list[tuple[int, str, list[str]]]:
    """(level, heading, paragraphs) from an .rst file, markup reduced to plain text."""
    lines = [ROLE.sub(r"\1", line).replace("``", "") for line in rst.splitlines()]
    found: list[tuple[int, str, list[str]]] = []
    levels: list[str] = []
    paragraph: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if UNDERLINE.match(nxt.strip()) and line.strip() and not UNDERLINE.match(line.strip()):
            if nxt[0] not in levels:
                levels.append(nxt[0])
            found.append((levels.index(nxt[0]) + 1, line.strip(), []))
        elif UNDERLINE.match(line.strip()) or line.startswith(("..", "   :")):
            continue
        elif not line.strip():
            if paragraph and found:
                found[-1][2].append(" ".join(paragraph))
            paragraph = []
        else:
            paragraph.append(line.strip())
    if paragraph and found:
        found[-1][2].append(" ".join(paragraph))
    return found


def write_markdown(parts, path: Path) -> None:
    body = "".join(f"{'#' * level} {title}\n\n" + "".join(f"{p}\n\n" for p in paras) for level, title, paras in parts)
    path.write_text(body)


def write_pdf(parts, path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    for level, title, paras in parts:
        pdf.set_font("Helvetica", "B", 18 - 2 * level)
        pdf.multi_cell(0, 9, title.encode("latin-1", "replace").decode("latin-1"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)
        for para in paras:
            pdf.multi_cell(0, 6, para.encode("latin-1", "replace").decode("latin-1"), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    pdf.output(str(path))


def write_docx(parts, path: Path) -> None:
    import docx

    document = docx.Document()
    for level, title, paras in parts:
        document.add_heading(title, level)
        for para in paras:
            document.add_paragraph(para)
    document.save(str(path))


def main(sources: Path) -> None:
    write_markdown(sections((sources / "whatnow.rst.txt").read_text()), HERE / "whatnow.md")
    write_pdf(sections((sources / "venv.rst.txt").read_text()), HERE / "venv.pdf")
    write_docx(sections((sources / "stdlib.rst.txt").read_text()), HERE / "stdlib.docx")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
