"""Every Cassandra panel query of every dashboard, rendered as Grafana and the HadesArchitect datasource
render it, runs against a real Cassandra holding pipeline-written data, returns rows, and returns columns
the datasource can chart: the series id (text), a number, a timestamp, and never a decimal.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.integration.market_data import (  # noqa: F401 (market_keyspace is a fixture)
    LIVE_SYMBOLS,
    floor_time,
    market_keyspace,
    old_ticks,
)
from tests.unit.cql_queries import (
    PanelQuery,
    cassandra_queries,
    column_type_problems,
    load_dashboards,
    panel_queries,
    referenced_variables,
    render_grafana_query,
    variables,
)

pytestmark = pytest.mark.integration

DASHBOARDS = load_dashboards()
PANEL_SYMBOL = "BTCUSDT"  # a value of $symbol with rows in every table


def _cases() -> list[tuple[PanelQuery, str | None]]:
    """Each Cassandra panel query, once per option of the custom variables it uses ($interval)."""
    cases = []
    for query in cassandra_queries(DASHBOARDS):
        if "interval" in referenced_variables(query.target["target"]):
            options = variables(DASHBOARDS[query.dashboard])["interval"]["options"]
            cases += [(query, option["value"]) for option in options]
        else:
            cases.append((query, None))
    return cases


CASES = _cases()


def epoch_ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def symbol_values(session, dashboard: dict) -> list[str]:
    """What Grafana offers for $symbol: the rows of the variable's own query."""
    return [row[0] for row in session.execute(variables(dashboard)["symbol"]["query"]["query"])]


def values_for(session, dashboard: dict, interval: str | None) -> dict[str, str | list[str]]:
    """Variable values as Grafana sends them: `All` of a multi-value variable is every value it lists."""
    symbol = variables(dashboard)["symbol"]
    listed = symbol_values(session, dashboard)
    values: dict[str, str | list[str]] = {"symbol": listed if symbol.get("multi") else PANEL_SYMBOL}
    if interval is not None:
        values["interval"] = interval
    return values


def run_panel(market, query: PanelQuery, interval: str | None, time_from, time_to):
    values = values_for(market.session, DASHBOARDS[query.dashboard], interval)
    cql = render_grafana_query(query.target["target"], values, epoch_ms(time_from), epoch_ms(time_to))
    result = market.session.execute(cql, timeout=30)
    return result, list(result)


@pytest.mark.parametrize("query, interval", CASES,
                         ids=[f"{q.id}{'@' + i if i else ''}" for q, i in CASES])
def test_panel_query_returns_rows_the_datasource_can_chart(market_keyspace, query, interval):  # noqa: F811
    now = market_keyspace.now
    result, rows = run_panel(market_keyspace, query, interval, now - timedelta(days=2), now + timedelta(minutes=1))
    assert rows, f"{query.id} returned no row"
    assert column_type_problems(result.column_names, result.column_types) == []


def test_symbol_variable_lists_every_replicated_symbol(market_keyspace):  # noqa: F811
    for name in ("market-overview", "candlesticks", "trades"):
        listed = symbol_values(market_keyspace.session, DASHBOARDS[name])
        assert set(LIVE_SYMBOLS) <= set(listed)
        assert len(listed) == len(set(listed))


def test_time_range_panels_read_the_last_seven_utc_days_of_the_range(market_keyspace):  # noqa: F811
    """Ticker history honours $__timeFrom/$__timeTo and reads the range end's UTC day and the 6 before it."""
    query = next(q for q in cassandra_queries(DASHBOARDS) if q.panel == "24h change over time")
    now = market_keyspace.now
    in_window, day_before_window = (t.replace(tzinfo=None) for t in old_ticks(now))
    _, eight_days = run_panel(market_keyspace, query, None, now - timedelta(days=8), now)
    _, last_hour = run_panel(market_keyspace, query, None, now - timedelta(hours=1), now)
    times = {row.event_time for row in eight_days}
    assert {in_window, now.replace(tzinfo=None)} <= times
    assert day_before_window not in times  # documented limit: 7 day partitions
    hour_times = {row.event_time for row in last_hour}
    assert now.replace(tzinfo=None) in hour_times
    assert all(t >= (now - timedelta(hours=1)).replace(tzinfo=None) for t in hour_times)


def test_candles_are_the_ones_opened_inside_the_range(market_keyspace):  # noqa: F811
    query = next(q for q in cassandra_queries(DASHBOARDS) if "klines_by_bucket" in q.target["target"])
    now = market_keyspace.now
    minute = floor_time(now, timedelta(minutes=1))
    _, rows = run_panel(market_keyspace, query, "1m", minute - timedelta(minutes=1), now)
    assert sorted(row.open_time for row in rows) == [(minute - timedelta(minutes=1)).replace(tzinfo=None),
                                                      minute.replace(tzinfo=None)]
    assert {row.symbol for row in rows} == {PANEL_SYMBOL}


def test_postgres_panel_query_runs_on_the_source_database(pg_dsn, settings):
    import psycopg

    (query,) = [q for q in panel_queries(DASHBOARDS) if q.datasource.get("type") == "grafana-postgresql-datasource"]
    with psycopg.connect(**settings.postgres.connect_kwargs()) as conn:
        cursor = conn.execute(query.target["rawSql"])
        assert [c.name for c in cursor.description] == ["slot_name", "active", "retained_wal_bytes",
                                                        "unconfirmed_bytes"]
