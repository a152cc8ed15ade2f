"""What an index *is*: vectors + chunk store + manifest, in versioned directories.

This package imports neither `pipelines` nor `serving`: both depend on it.
"""
