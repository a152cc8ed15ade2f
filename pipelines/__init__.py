"""Ray Data batch jobs: read -> parse -> chunk -> embed -> write a versioned index.

It imports only `indexes` and `core`; the serving app is its sibling (tests/unit/test_layers.py)."""
