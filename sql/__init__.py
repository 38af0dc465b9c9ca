"""PostgreSQL DDL applied by `cdc init`, in file-name order (shipped as package data)."""
