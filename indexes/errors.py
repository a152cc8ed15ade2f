"""What can be wrong with an index, in one module every other one may import (the backends
included, without a cycle through the layout that opens them)."""

__all__ = ["IndexLockedError", "IndexNotFoundError", "TamperedIndexError"]


class TamperedIndexError(ValueError):
    """The store holds something no index job writes (a CURRENT naming a path, a file that does not
    match its manifest): refused, never followed."""


class IndexLockedError(RuntimeError):
    """Another job holds this index's writer lock."""


class IndexNotFoundError(LookupError):
    """The index has no complete version yet."""
