"""The bottom layer: what the index job, serving and evaluation share that is not an index: the strict
config base, offline settings and placement checks. It imports nothing else of this repository."""
