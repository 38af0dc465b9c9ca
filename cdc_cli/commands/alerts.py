"""`cdc alerts`: price-move alerts from the ticker change stream, delivered through Alertmanager."""

from __future__ import annotations

import logging
import sys

import click
import orjson

from cdc_cli.commands.options import alertmanager_option, kafka_option

log = logging.getLogger("cdc_consumer.alerts")


@click.command()
@click.option("--rules", "rules_file", required=True, type=click.Path(dir_okay=False),
              help="YAML rules file (see compose/alerts/price-rules.yml).")
@click.option("--topic", default="cdc.public.ticker_24h", show_default=True,
              help="Debezium topic of public.ticker_24h.")
@click.option("--group", default="cdc-alerts", show_default=True, help="Kafka consumer group of the evaluator.")
@click.option("--resend", default="30s", show_default=True,
              help="While an alert holds, re-push it this often (endsAt = 4 x this after each push).")
@click.option("--replay-margin", default="1m", show_default=True,
              help="On start, replay this much more than the longest window from Kafka.")
@click.option("--check", is_flag=True, help="Only validate the rules file and print a summary.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (0 picks a free port, logged).")
@alertmanager_option
@kafka_option
def alerts(rules_file, topic, group, resend, replay_margin, check, metrics_port, alertmanager_url,
           kafka) -> None:
    """Evaluate price-move rules on ticker changes and push alerts to Alertmanager.

    Prints one JSON line per alert pushed (state firing, refresh or resolved). SIGTERM/Ctrl-C exits 0
    after committing what was delivered.
    """
    from cdc_consumer.price_alerts import PriceMoveEngine, RulesError, load_rules, parse_duration_ms

    try:
        resend_ms = parse_duration_ms(resend)
        replay_margin_ms = parse_duration_ms(replay_margin)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        rules = load_rules(rules_file)
    except RulesError as exc:
        raise click.UsageError(str(exc)) from exc
    if check:
        for rule in rules:
            click.echo(f"{rule.name}: {','.join(rule.symbols)} {rule.direction} >= {rule.threshold}% "
                       f"within {rule.window_ms // 1000}s")
        return
    sys.exit(_run(rules, PriceMoveEngine(rules, resend_ms=resend_ms), topic=topic, group=group,
                  url=alertmanager_url, kafka=kafka, replay_margin_ms=replay_margin_ms,
                  metrics=_metrics(metrics_port)))


def _metrics(port: int | None):
    from cdc_consumer.alert_stream import AlertMetrics

    metrics = AlertMetrics()
    if port is not None:
        try:
            log.info("metrics on http://127.0.0.1:%d/metrics", metrics.serve(port))
        except OSError as exc:
            raise click.ClickException(f"--metrics-port {port}: {exc.strerror or exc}") from exc
    return metrics


def _run(rules, engine, *, topic, group, url, kafka, replay_margin_ms, metrics) -> int:
    from confluent_kafka import KafkaException

    from cdc_cli.commands.ingest import stop_on_signals
    from cdc_consumer.alert_stream import AlertStream
    from cdc_consumer.alertmanager import AlertmanagerClient, AlertmanagerRejected, AlertmanagerUnavailable

    stop = stop_on_signals()
    client = AlertmanagerClient(url)
    stream = AlertStream(kafka=kafka, topic=topic, group=group, engine=engine, alertmanager=client,
                         replay_margin_ms=replay_margin_ms, emit=_print_update, metrics=metrics)
    log.info("evaluating %d rule(s) on %s (group %s), alerts to %s", len(rules), topic, group, url)
    try:
        stats = stream.run(stop)
    except (AlertmanagerRejected, AlertmanagerUnavailable, KafkaException) as exc:
        click.echo(f"cdc alerts: {exc}", err=True)
        return 1
    finally:
        client.close()
    log.info("stopped: %d records (%d replayed, %d skipped, %d undecodable), pushed %s", stats.records,
             stats.replayed, stats.skipped, stats.undecodable, stats.pushed)
    return 0


def _print_update(state, update) -> None:
    click.echo(orjson.dumps({"state": state, **update.to_api()}))
    sys.stdout.flush()
