"""cdc: change-data-capture replication of market data into Cassandra."""

__version__ = "0.1.0"
