"""When and how a committed report was made: every report says both, so a figure can be re-made."""

from __future__ import annotations

import shlex
import sys
from datetime import UTC, datetime


def now() -> str:
    """UTC, to the second: `2026-11-30T12:31:42Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def command() -> str:
    """The `rayrag ...` command line that is running, quoted so it can be pasted back."""
    return " ".join(["rayrag", *map(shlex.quote, sys.argv[1:])])
