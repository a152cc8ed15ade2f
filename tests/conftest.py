"""Shared fixtures. The Ray-backed ones live in tests/integration/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexes.offline import ensure_offline

ensure_offline()

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE_DIR


def write_corpus(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create a small corpus of text files (str) or raw bytes."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root
