"""`python -m cdc_cli` runs the `cdc` command."""

from cdc_cli.cli import main

main()
