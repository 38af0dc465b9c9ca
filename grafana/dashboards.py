"""The four Grafana dashboards as code, built with Grafana's own `grafana-foundation-sdk` (its builders follow
Grafana's dashboard schema, so a misspelt option is an AttributeError here, not a silently ignored key).

    .venv/bin/python grafana/dashboards.py           # (re)write grafana/dashboards/*.json
    .venv/bin/python grafana/dashboards.py --check   # exit 1 if a checked-in file differs from the code

The generated JSON stays checked in: Grafana provisions it from grafana/dashboards/ (no Python at run time).
tests/unit/test_grafana_dashboards_code.py regenerates it and fails on any difference. The SDK knows no
Cassandra or PostgreSQL query type, so those targets are written by `RawQuery`, a Dataquery of exact JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import barchart, candlestick, common, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import candlestick as candle_models
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

OUT = Path(__file__).resolve().parent / "dashboards"

CASSANDRA = models.DataSourceRef(type_val="hadesarchitect-cassandra-datasource", uid="cdc-cassandra")
PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid="cdc-prometheus")
POSTGRES = models.DataSourceRef(type_val="grafana-postgresql-datasource", uid="cdc-postgres")

# Partitions of the time-bucketed tables: the UTC days of the last week before the range end.
LAST_7_DAYS = ", ".join(["todate($__timeTo)"] + [f"todate($__timeTo) - {d}d" for d in range(1, 7)])
LAST_3_MONTHS = "floor(todate($__timeTo), 1mo), floor(todate($__timeTo), 1mo) - 1mo, floor(todate($__timeTo), 1mo) - 2mo"
SYMBOLS_CQL = "SELECT DISTINCT symbol FROM latest_prices"
INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")


# -- queries -------------------------------------------------------------------------------------------

class _Json(cogvariants.Dataquery):
    def __init__(self, document: dict):
        self.document = document

    def to_json(self) -> dict:
        return self.document


class RawQuery:
    """A target of a data source the SDK has no type for, given as its exact JSON."""

    def __init__(self, datasource: models.DataSourceRef, **fields):
        self.document = {"refId": "A", "datasource": datasource, **fields}

    def ref_id(self, ref_id: str) -> RawQuery:
        self.document["refId"] = ref_id
        return self

    def build(self) -> _Json:
        return _Json(self.document)


def cql(text: str, **extra) -> RawQuery:
    return RawQuery(CASSANDRA, queryType="query", rawQuery=True, target=text, **extra)


def promql(expr: str, legend: str, *, instant: bool = False, ref_id: str = "A") -> prometheus.Dataquery:
    query = prometheus.Dataquery().ref_id(ref_id).datasource(PROMETHEUS).expr(expr).legend_format(legend)
    return query.instant() if instant else query.range()


def promql_series(*queries: tuple[str, str]) -> list[prometheus.Dataquery]:
    return [promql(expr, legend, ref_id=chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)]


# -- panel helpers -------------------------------------------------------------------------------------

def place(panel, panel_id: int, title: str, description: str, h: int, w: int, x: int, y: int,
          datasource: models.DataSourceRef):
    return (panel.id(panel_id).title(title).description(description).datasource(datasource)
            .grid_pos(models.GridPos(h=h, w=w, x=x, y=y)))


def steps(*colors_from: tuple[str, float | None]) -> board.ThresholdsConfig:
    return (board.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE)
            .steps([models.Threshold(value=value, color=color) for color, value in colors_from]))


def value_texts(mapping: dict[str, tuple[str, str]]) -> list[models.ValueMap]:
    return [models.ValueMap(options={value: models.ValueMappingResult(text=text, color=color)
                                     for value, (text, color) in mapping.items()})]


def transform(transform_id: str, options: dict) -> models.DataTransformerConfig:
    return models.DataTransformerConfig(id_val=transform_id, options=options)


def sort_by(field: str, desc: bool) -> models.DataTransformerConfig:
    return transform("sortBy", {"sort": [{"field": field, "desc": desc}]})


def prop(prop_id: str, value) -> models.DynamicConfigValue:
    return models.DynamicConfigValue(id_val=prop_id, value=value)


def hidden_legend() -> common.VizLegendOptions:
    return (common.VizLegendOptions().show_legend(False).display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM))


def single_tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.SINGLE).sort(common_models.SortOrder.NONE)


def stat_panel(panel_id: int, title: str, description: str, x: int, w: int, expr: str, legend: str) -> stat.Panel:
    panel = place(stat.Panel(), panel_id, title, description, 5, w, x, 0, PROMETHEUS)
    return (panel.with_target(promql(expr, legend, instant=True))
            .color_mode(common_models.BigValueColorMode.BACKGROUND)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])))


def cassandra_timeseries(panel_id, title, description, h, w, x, y, text: str, **extra) -> timeseries.Panel:
    return place(timeseries.Panel(), panel_id, title, description, h, w, x, y, CASSANDRA).with_target(cql(text, **extra))


def dashboard(uid: str, title: str, description: str, tags: list[str], *, time_from: str,
              refresh: str) -> board.Dashboard:
    return (board.Dashboard(title).uid(uid).description(description).tags(tags).readonly()
            .tooltip(models.DashboardCursorSync.CROSSHAIR).version(1).timezone("utc").time(time_from, "now")
            .refresh(refresh)
            .link(board.DashboardLink("CDC dashboards").type(models.DashboardLinkType.DASHBOARDS).tags(["cdc"])
                  .as_dropdown(True).include_vars(True).keep_time(True)))


def symbol_variable(*, multi: bool) -> board.QueryVariable:
    variable = (board.QueryVariable("symbol").label("Symbol").datasource(CASSANDRA).query({"query": SYMBOLS_CQL})
                .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD).sort(models.VariableSort.ALPHABETICAL_ASC)
                .description("Symbols: the partition keys of latest_prices").multi(multi).include_all(multi))
    if multi:
        variable = variable.current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
    return variable


def interval_variable(label: str, description: str) -> board.CustomVariable:
    return (board.CustomVariable("interval").label(label).values(",".join(INTERVALS)).description(description)
            .current(models.VariableOption(selected=True, text=INTERVALS[0], value=INTERVALS[0]))
            .options([models.VariableOption(selected=i == 0, text=v, value=v) for i, v in enumerate(INTERVALS)]))


# -- market overview -----------------------------------------------------------------------------------

def market_overview() -> board.Dashboard:
    in_symbols = "WHERE symbol IN (${symbol:singlequote})"
    percent_colors = steps(("red", None), ("green", 0))
    latest = (place(table.Panel(), 1, "Latest price", "Newest ticker row per symbol (Binance 24h rolling window).",
                    10, 24, 0, 0, CASSANDRA)
              .with_target(cql("SELECT symbol, last_price, event_time, price_change_percent, bid_price, ask_price, "
                               f"high_price, low_price, quote_volume FROM latest_prices {in_symbols}"))
              .with_transformation(transform("merge", {})).with_transformation(sort_by("symbol", False))
              .decimals(8).show_header(True).cell_height(common_models.TableCellHeight.SM)
              .override_by_name("price_change_percent", [
                  prop("unit", "percent"), prop("decimals", 2), prop("custom.cellOptions", {"type": "color-text"}),
                  prop("color", {"mode": "thresholds"}), prop("thresholds", percent_colors.build())])
              .override_by_name("quote_volume", [prop("unit", "short"), prop("decimals", 0)])
              .override_by_name("event_time", [prop("unit", "dateTimeAsIso")]))
    movers = (place(barchart.Panel(), 2, "Top movers (24h % change)",
                    "Symbols sorted by their 24h price change; Cassandra cannot order by a regular column, so the "
                    "panel sorts.", 10, 12, 0, 10, CASSANDRA)
              .with_target(cql(f"SELECT symbol, price_change_percent, event_time FROM latest_prices {in_symbols}"))
              .with_transformation(transform("merge", {}))
              .with_transformation(transform("organize", {"excludeByName": {"event_time": True}}))
              .with_transformation(sort_by("price_change_percent", True))
              .unit("percent").decimals(2)
              .color_scheme(board.FieldColor().mode(models.FieldColorModeId.THRESHOLDS)).thresholds(percent_colors)
              .orientation(common_models.VizOrientation.HORIZONTAL).x_field("symbol")
              .show_value(common_models.VisibilityMode.AUTO).legend(hidden_legend()).tooltip(single_tooltip()))
    volume = (place(barchart.Panel(), 3, "24h volume (quote asset)",
                    "Traded quote volume over the last 24h per symbol (Binance quoteVolume).", 10, 12, 12, 10, CASSANDRA)
              .with_target(cql(f"SELECT symbol, quote_volume, event_time, volume FROM latest_prices {in_symbols}"))
              .with_transformation(transform("merge", {}))
              .with_transformation(transform("organize", {"excludeByName": {"event_time": True, "volume": True}}))
              .with_transformation(sort_by("quote_volume", True))
              .unit("short").decimals(0)
              .orientation(common_models.VizOrientation.VERTICAL).x_field("symbol")
              .show_value(common_models.VisibilityMode.NEVER).legend(hidden_legend()).tooltip(single_tooltip()))
    change = (cassandra_timeseries(
        4, "24h change over time",
        "Ticker history (ticker_by_day): the UTC days of the time range, at most the last 7 days before its end.",
        9, 24, 0, 20,
        f"SELECT symbol, price_change_percent, event_time FROM ticker_by_day {in_symbols} AND day IN ({LAST_7_DAYS}) "
        "AND event_time >= $__timeFrom AND event_time <= $__timeTo", alias="{{ symbol }}")
        .unit("percent").decimals(2))
    return (dashboard("cdc-market-overview", "Market overview",
                      "Latest replicated ticker per symbol (Cassandra latest_prices), 24h movers and volume.",
                      ["cdc", "market"], time_from="now-6h", refresh="30s")
            .with_variable(symbol_variable(multi=True))
            .with_panel(latest).with_panel(movers).with_panel(volume).with_panel(change))


# -- candlesticks --------------------------------------------------------------------------------------

def candlesticks() -> board.Dashboard:
    candles = (place(candlestick.Panel(), 1, "$symbol $interval",
                     "Candles whose open time is in the range. Partitions read: the day buckets (sub-hour intervals) "
                     "of the last 7 days and the month buckets of the last 3 months before the range end.",
                     14, 24, 0, 0, CASSANDRA)
               .with_target(cql("SELECT symbol, close, open_time, open, high, low, volume FROM klines_by_bucket "
                                f"WHERE symbol = '$symbol' AND interval = '$interval' AND bucket IN ({LAST_7_DAYS}, "
                                f"{LAST_3_MONTHS}) AND open_time >= $__timeFrom AND open_time <= $__timeTo"))
               .mode(candle_models.VizDisplayMode.CANDLES_VOLUME).candle_style(candle_models.CandleStyle.CANDLES)
               .color_strategy(candle_models.ColorStrategy.OPEN_CLOSE)
               .colors(candlestick.CandlestickColors().up("green").down("red"))
               .include_all_fields(False)
               .fields(candlestick.CandlestickFieldMap().open("open").high("high").low("low").close("close")
                       .volume("volume"))
               .legend(common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.LIST)
                       .placement(common_models.LegendPlacement.BOTTOM)))
    ticker = (cassandra_timeseries(
        2, "$symbol ticker: last, bid, ask", "Every replicated ticker row of the symbol in the range (ticker_by_day).",
        9, 16, 0, 14,
        f"SELECT symbol, last_price, event_time, bid_price, ask_price FROM ticker_by_day WHERE symbol = '$symbol' "
        f"AND day IN ({LAST_7_DAYS}) AND event_time >= $__timeFrom AND event_time <= $__timeTo")
        .decimals(8))
    book = (place(table.Panel(), 3, "$symbol order book",
                  "Current top levels per side (order_book: one partition per symbol).", 9, 8, 16, 14, CASSANDRA)
            .with_target(cql("SELECT side, price, snapshot_time, level, quantity, last_update_id FROM order_book "
                             "WHERE symbol = '$symbol'"))
            .with_transformation(transform("merge", {})).with_transformation(sort_by("price", True))
            .decimals(8).override_by_name("snapshot_time", [prop("custom.hidden", True)]))
    return (dashboard("cdc-candlesticks", "Candlesticks",
                      "Klines of one symbol and interval over the time range (Cassandra klines_by_bucket), its ticker "
                      "and order book.", ["cdc", "market"], time_from="now-6h", refresh="30s")
            .with_variable(symbol_variable(multi=False))
            .with_variable(interval_variable("Interval", "Kline interval (klines_by_bucket.interval)"))
            .with_panel(candles).with_panel(ticker).with_panel(book))


# -- trades --------------------------------------------------------------------------------------------

def trades() -> board.Dashboard:
    where = (f"FROM trades_by_day WHERE symbol = '$symbol' AND day IN ({LAST_7_DAYS}) "
             "AND trade_time >= $__timeFrom AND trade_time <= $__timeTo")
    per_bucket = "GROUP BY symbol, day, floor(trade_time, $interval)"
    counts = (cassandra_timeseries(
        1, "$symbol trades per $interval",
        "Trade count per bucket, counted by Cassandra (GROUP BY on the clustering time; buckets are aligned to UTC).",
        10, 24, 0, 0, f"SELECT symbol, count(*) AS trades, floor(trade_time, $interval) AS bucket_start {where} "
                      f"{per_bucket}")
        .draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(60).decimals(0))
    volume = (cassandra_timeseries(
        2, "$symbol traded quote volume per $interval",
        "Sum of price x quantity per bucket (double: for charts; exact values are in quote_qty_exact).",
        9, 24, 0, 10, f"SELECT symbol, sum(quote_qty) AS quote_volume, floor(trade_time, $interval) AS bucket_start "
                      f"{where} {per_bucket}")
        .draw_style(common_models.GraphDrawStyle.BARS).fill_opacity(60))
    newest = (place(table.Panel(), 3, "$symbol newest trades",
                    "The newest 200 trades of each UTC day in the range (partitions are newest first), newest on top.",
                    10, 24, 0, 19, CASSANDRA)
              .with_target(cql("SELECT symbol, price, trade_time, qty, quote_qty, is_buyer_maker, trade_id "
                               f"{where} PER PARTITION LIMIT 200"))
              .with_transformation(transform("merge", {})).with_transformation(sort_by("trade_time", True))
              .decimals(8).override_by_name("trade_time", [prop("unit", "dateTimeAsIso")]))
    return (dashboard("cdc-trades", "Trades", "Trades of one symbol (Cassandra trades_by_day): count and volume per "
                      "bucket, and the newest trades.", ["cdc", "market"], time_from="now-1h", refresh="30s")
            .with_variable(symbol_variable(multi=False))
            .with_variable(interval_variable("Bucket", "Bucket width of the per-interval panels"))
            .with_panel(counts).with_panel(volume).with_panel(newest))


# -- pipeline health -----------------------------------------------------------------------------------

def pipeline_health() -> board.Dashboard:
    rate = "[$__rate_interval]"
    stats = [
        stat_panel(1, "Consumer up", "1 while Prometheus can scrape the consumer's /metrics.", 0, 4,
                   'max(up{job="cdc-consume"}) or vector(0)', "up")
        .mappings(value_texts({"0": ("DOWN", "red"), "1": ("UP", "green")})),
        stat_panel(2, "Dead-lettered records", "Records sent to the DLQ topics since the consumer started (never "
                   "silently dropped).", 4, 5, "sum(cdc_events_dlq_total) or vector(0)", "DLQ")
        .decimals(0).thresholds(steps(("green", None), ("red", 1))),
        stat_panel(3, "Consumer lag", "Messages not yet committed by the consumer group, all partitions.", 9, 5,
                   "sum(cdc_consumer_lag) or vector(0)", "lag")
        .decimals(0).thresholds(steps(("green", None), ("orange", 10000))),
        stat_panel(4, "End-to-end lag p99", "Source commit to Cassandra acknowledgement, 99th percentile over 5 "
                   "minutes.", 14, 5, "histogram_quantile(0.99, sum by (le) (rate(cdc_end_to_end_lag_seconds_bucket"
                   "[5m])))", "p99")
        .unit("s").thresholds(steps(("green", None), ("orange", 5))),
        stat_panel(5, "Paused (Cassandra failing)", "1 while partitions are paused because Cassandra rejects writes.",
                   19, 5, "max(cdc_consumer_paused) or vector(0)", "paused")
        .mappings(value_texts({"0": ("no", "green"), "1": ("PAUSED", "red")})),
    ]
    # Upstream of the consumer, on the row below it: the poller feeding PostgreSQL and Debezium reading it.
    upstream_y, consumer_y = 5, 13
    debezium = (place(timeseries.Panel(), 13, "Debezium: behind source, queue",
                      "Milliseconds between a change's source commit and Debezium reading it "
                      "(MilliSecondsBehindSource), and free slots in its change queue (QueueRemainingCapacity: "
                      "near 0 means Kafka cannot keep up).", 8, 8, 0, upstream_y, PROMETHEUS)
                .targets(promql_series(
                    ("max(debezium_postgres_streaming_milliseconds_behind_source)", "behind source"),
                    ("min(debezium_postgres_streaming_queue_remaining_capacity)", "queue remaining capacity"),
                    ("min(debezium_postgres_streaming_connected)", "connected")))
                .unit("ms")
                .override_by_name("queue remaining capacity", [prop("unit", "short"),
                                                               prop("custom.axisPlacement", "right")])
                .override_by_name("connected", [prop("unit", "bool_yes_no"), prop("custom.axisPlacement", "hidden")]))
    poller_rows = (place(timeseries.Panel(), 14, "Poller: cycles and rows written",
                         "`cdc poll` cycles per second and the rows it writes to PostgreSQL per table (only real "
                         "changes are written).", 8, 8, 8, upstream_y, PROMETHEUS)
                   .targets(promql_series((f"sum(rate(cdc_poller_cycles_total{rate}))", "cycles"),
                                          (f"sum by (table) (rate(cdc_poller_rows_written_total{rate}))",
                                           "rows -> {{table}}")))
                   .unit("ops"))
    poller_limits = (place(timeseries.Panel(), 15, "Poller: request weight, rate limits, failures",
                           "Binance request weight used in the current minute (X-MBX-USED-WEIGHT-1M), 429/418 "
                           "answers and failed cycles per interval.", 8, 8, 16, upstream_y, PROMETHEUS)
                     .targets(promql_series(("max(cdc_poller_request_weight_used)", "weight used"),
                                            (f"sum by (status) (increase(cdc_poller_rate_limited_total{rate}))",
                                             "HTTP {{status}}"),
                                            (f"sum(increase(cdc_poller_failures_total{rate}))", "failures")))
                     .unit("short")
                     .override_by_name("weight used", [prop("custom.axisPlacement", "right")]))
    y = consumer_y
    consumer = [
        place(timeseries.Panel(), 6, "Events per second", "Kafka records consumed per topic, change events applied "
              "per Cassandra table, skipped and dead-lettered.", 9, 12, 0, y, PROMETHEUS)
        .targets(promql_series((f"sum by (topic) (rate(cdc_events_consumed_total{rate}))", "consumed {{topic}}"),
                               (f"sum by (table) (rate(cdc_events_applied_total{rate}))", "applied -> {{table}}"),
                               (f"sum by (reason) (rate(cdc_events_skipped_total{rate}))", "skipped ({{reason}})"),
                               (f"sum(rate(cdc_events_dlq_total{rate}))", "DLQ")))
        .unit("ops"),
        place(timeseries.Panel(), 7, "End-to-end lag", "Now minus the source commit time when a change is applied "
              "(histogram quantiles).", 9, 12, 12, y, PROMETHEUS)
        .targets(promql_series(*[(f"histogram_quantile({q}, sum by (le) (rate(cdc_end_to_end_lag_seconds_bucket"
                                  f"{rate})))", f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)]))
        .unit("s"),
        place(timeseries.Panel(), 8, "Consumer lag by topic", "High watermark minus committed offset, summed over "
              "partitions.", 9, 12, 0, y + 9, PROMETHEUS)
        .with_target(promql("sum by (topic) (cdc_consumer_lag)", "{{topic}}")).unit("short"),
        place(timeseries.Panel(), 9, "Dead-lettered records by error", "DLQ records per source topic and error type "
              "in each interval.", 9, 12, 12, y + 9, PROMETHEUS)
        .with_target(promql(f"sum by (topic, error_type) (increase(cdc_events_dlq_total{rate}))",
                            "{{topic}}: {{error_type}}"))
        .legend(common.VizLegendOptions().show_legend(True).display_mode(common_models.LegendDisplayMode.TABLE)
                .placement(common_models.LegendPlacement.RIGHT))
        .unit("short"),
        place(timeseries.Panel(), 10, "Cassandra writes", "Row operations acknowledged per table and operation; "
              "retried requests.", 9, 12, 0, y + 18, PROMETHEUS)
        .targets(promql_series((f"sum by (table, operation) (rate(cdc_rows_written_total{rate}))",
                                "{{table}} {{operation}}"),
                               (f"sum by (error) (rate(cdc_write_retries_total{rate}))", "retry: {{error}}")))
        .unit("ops"),
        place(timeseries.Panel(), 11, "Cassandra write latency", "Latency of one write request (statement or "
              "single-partition batch); requests in flight.", 9, 12, 12, y + 18, PROMETHEUS)
        .targets(promql_series((f"histogram_quantile(0.99, sum by (le) (rate(cdc_batch_write_seconds_bucket{rate})))",
                                "p99"),
                               (f"histogram_quantile(0.5, sum by (le) (rate(cdc_batch_write_seconds_bucket{rate})))",
                                "p50"),
                               ("sum(cdc_writes_in_flight)", "in flight")))
        .unit("s")
        .override_by_name("in flight", [prop("unit", "short"), prop("custom.axisPlacement", "right")]),
        place(table.Panel(), 12, "Replication slots (PostgreSQL)", "WAL the source keeps for each logical slot: "
              "grows while the connector is stopped or behind.", 7, 24, 0, y + 27, POSTGRES)
        .with_target(RawQuery(POSTGRES, format="table", rawQuery=True, editorMode="code", rawSql=(
            "SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS "
            "retained_wal_bytes, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS "
            "unconfirmed_bytes FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY slot_name")))
        .override_by_regexp(".*_bytes", [prop("unit", "bytes")]),
    ]
    health = dashboard("cdc-pipeline-health", "Pipeline health",
                       "The poller (`cdc poll --metrics-port`), Debezium (JMX exporter) and the consumer (`cdc "
                       "consume --metrics-port`), scraped by Prometheus, and the source replication slot.",
                       ["cdc", "pipeline"], time_from="now-1h", refresh="10s")
    for panel in [*stats, debezium, poller_rows, poller_limits, *consumer]:
        health = health.with_panel(panel)
    return health


DASHBOARDS = {"market-overview": market_overview, "candlesticks": candlesticks, "trades": trades,
              "pipeline-health": pipeline_health}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2) + "\n"


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for name in DASHBOARDS:
        path, text = OUT / f"{name}.json", render(name)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run grafana/dashboards.py): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
