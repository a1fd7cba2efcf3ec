"""`python -m musilingo_cli` runs the CLI; so do `torchrun -m musilingo_cli train ...` and
`deepspeed --module musilingo_cli train ...` (whose `--local_rank=N` the root command accepts)."""

from musilingo_cli.cli import main

main()
