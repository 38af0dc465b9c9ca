"""The `cdc` command: a click group whose verbs live in `cdc_cli.commands.*`.

Verbs are imported lazily so `cdc --help` and `cdc decode` do not pay for the Cassandra driver or
librdkafka start-up.
"""

from __future__ import annotations

import importlib
import logging

import click

from cdc_consumer import __version__

# verb -> "module:attribute"
VERBS: dict[str, str] = {
    "init": "cdc_cli.commands.init:init",
    "decode": "cdc_cli.commands.decode:decode",
    "poll": "cdc_cli.commands.ingest:poll",
    "binance-sim": "cdc_cli.commands.ingest:binance_sim",
    "register-connector": "cdc_cli.commands.connector:register_connector",
    "connector": "cdc_cli.commands.connector:connector",
    "status": "cdc_cli.commands.status:status",
    "snapshot": "cdc_cli.commands.connector:snapshot",
    "consume": "cdc_cli.commands.consume:consume",
    "verify": "cdc_cli.commands.verify:verify",
    "exporter": "cdc_cli.commands.exporter:exporter",
    "alerts": "cdc_cli.commands.alerts:alerts",
    "dlq": "cdc_cli.commands.dlq:dlq",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in VERBS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = VERBS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # verb not built yet
                return None
            raise
        return getattr(module, attr, None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cdc")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Change-data-capture of market data: Binance -> PostgreSQL -> Debezium -> Kafka -> Cassandra.

    Connection settings come from CDC_* environment variables (see README, Configuration).
    """
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The driver announces its load-balancing datacentre at INFO on every connect: noise for a CLI.
    logging.getLogger("cassandra.policies").setLevel(max(level, logging.WARNING))


if __name__ == "__main__":  # pragma: no cover
    main()
