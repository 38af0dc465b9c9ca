"""The `cdc` command line: the one package that imports every other (`ingest`, `connectors`, `cdc_consumer`)
and that nothing imports. `cli.py` is the click group; `commands/` holds its verbs, one module per area."""
