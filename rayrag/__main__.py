"""`python -m rayrag ...`: the CLI where the console script is not on PATH (e.g. `ray job submit`)."""

from rayrag.cli import main

main()
