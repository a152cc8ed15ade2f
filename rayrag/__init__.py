"""rayrag: distributed retrieval-augmented generation on Ray (CLI and root config)."""

__version__ = "0.1.0"
