"""Source side: Binance REST client, poller into PostgreSQL, simulated exchange."""
