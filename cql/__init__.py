"""Cassandra schema applied by `cdc init` and the cqlsh query book (shipped as package data)."""
