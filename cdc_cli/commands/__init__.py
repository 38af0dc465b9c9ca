"""Verbs of the `cdc` CLI, one module per area."""
