"""`python -m musilingo_cli` runs the CLI (also what `deepspeed -m musilingo_cli train ...` needs)."""

from musilingo_cli.cli import main

main()
