"""grafana/: provisioning is valid YAML, dashboards are valid JSON, every query goes to a provisioned data
source, Cassandra panel queries are key reads that never chart a decimal, Prometheus panels read metrics
that `cdc consume` exposes, and no credential is written in the files.

Each rule is a function returning the problems it finds, run against the real files (no problems) and
against a deliberately bad document (the problem is named), so every rule can fail. The same queries run
against a real Cassandra in tests/integration/test_dashboard_queries.py.
"""

from __future__ import annotations

import re

import pytest
import yaml

from cdc_consumer.metrics import ConsumerMetrics
from tests.unit.cql_queries import (
    CASSANDRA_PLUGIN,
    GRAFANA,
    PanelQuery,
    RenderError,
    cassandra_queries,
    exact_column_problems,
    key_read_problems,
    load_dashboards,
    panel_queries,
    parse_select,
    referenced_variables,
    render_grafana_query,
    variables,
)
from tests.unit.cql_tables import cql_table_schemas

DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
PROMETHEUS_CONFIG = GRAFANA.parent / "compose" / "prometheus" / "prometheus.yml"
MARKET_DASHBOARDS = ("market-overview", "candlesticks", "trades")
# Tables whose clustering key is a time: their panels must bound it with the dashboard's time range.
TIME_CLUSTERED = {"ticker_by_day": "event_time", "klines_by_bucket": "open_time", "trades_by_day": "trade_time"}
ENV_REFERENCE = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$")
METRIC_NAME = re.compile(r"\b((?:cdc|debezium)_[a-z0-9_]+)\b")
PROMETHEUS_BUILTIN_SERIES = {"up"}
# Series other components export under the names the branches agreed on: the poller (`cdc poll
# --metrics-port`), the replication-slot exporter, and Debezium through the JMX exporter in Connect.
CONTRACT_SERIES = {"cdc_poller_cycles_total", "cdc_poller_rows_written_total", "cdc_poller_request_weight_used",
                   "cdc_poller_rate_limited_total", "cdc_poller_failures_total",
                   "cdc_replication_slot_retained_wal_bytes", "cdc_replication_slot_active",
                   "debezium_postgres_streaming_milliseconds_behind_source",
                   "debezium_postgres_streaming_queue_remaining_capacity", "debezium_postgres_streaming_connected"}


# ------------------------------------------------------------------------------------------------ rules


def provisioned(datasources_doc: dict) -> dict[str, str]:
    """uid -> plugin type of every provisioned data source."""
    return {ds["uid"]: ds["type"] for ds in datasources_doc.get("datasources", [])}


def settings_not_from_environment(datasources_doc: dict) -> list[str]:
    """Credentials, addresses and the Cassandra keyspace/consistency must be ${VAR} references."""
    problems = []
    for ds in datasources_doc.get("datasources", []):
        values = {"url": ds.get("url"), "user": ds.get("user")}
        values.update({f"secureJsonData.{k}": v for k, v in (ds.get("secureJsonData") or {}).items()})
        json_data = ds.get("jsonData") or {}
        values.update({f"jsonData.{k}": json_data.get(k) for k in ("user", "keyspace", "consistency", "database")})
        for key, value in values.items():
            if value is not None and not ENV_REFERENCE.match(str(value)):
                problems.append(f"{ds.get('name')}.{key}")
    return problems


def unknown_datasources(queries: list[PanelQuery], dashboards: dict[str, dict], known: dict[str, str]) -> list[str]:
    """Panel targets and variables whose data source is not provisioned (by uid, with the same type)."""
    refs = [(q.id, q.datasource) for q in queries]
    refs += [(f"{name}:${var_name}", var.get("datasource")) for name, dashboard in dashboards.items()
             for var_name, var in variables(dashboard).items() if var.get("type") == "query"]
    return [f"{where} -> {ds}" for where, ds in refs
            if not isinstance(ds, dict) or known.get(ds.get("uid")) != ds.get("type")]


def placeholder_values(dashboard: dict) -> dict[str, list[str]]:
    """One value per variable (two for multi-value ones), as Grafana would pass them."""
    return {name: (["AAAUSDT", "BBBUSDT"] if var.get("multi") else ["1m" if var.get("type") == "custom" else
                                                                    "AAAUSDT"])
            for name, var in variables(dashboard).items()}


def rendered(query: PanelQuery, dashboards: dict[str, dict]) -> str:
    return render_grafana_query(query.target["target"], placeholder_values(dashboards[query.dashboard]),
                                1_700_000_000_000, 1_700_021_600_000)


def cassandra_target_problems(query: PanelQuery, dashboards: dict[str, dict], schemas) -> list[str]:
    target = query.target
    if not target.get("rawQuery") or not str(target.get("target", "")).strip():
        return ["not a raw CQL query (rawQuery: true, target: CQL)"]
    try:
        cql = rendered(query, dashboards)
    except RenderError as exc:
        return [str(exc)]
    problems = key_read_problems(cql, schemas) + exact_column_problems(cql, schemas)
    table = parse_select(cql).table if not problems else None
    if table in TIME_CLUSTERED and not {"$__timeFrom", "$__timeTo"} <= set(re.findall(r"\$__\w+", target["target"])):
        problems.append(f"reads {table} without the time macros $__timeFrom and $__timeTo")
    return problems


def variable_query_problems(dashboard: dict, schemas) -> list[str]:
    """Query variables list partition keys (SELECT DISTINCT <partition key> FROM table): no row is read."""
    problems = []
    for name, var in variables(dashboard).items():
        if var.get("type") != "query":
            continue
        text = (var.get("query") or {}).get("query", "") if isinstance(var.get("query"), dict) else var.get("query")
        match = re.fullmatch(r"\s*SELECT\s+DISTINCT\s+(.+?)\s+FROM\s+(\w+)\s*", text or "", re.IGNORECASE)
        schema = schemas.get(match.group(2)) if match else None
        if schema is None or tuple(c.strip() for c in match.group(1).split(",")) != schema.partition_key:
            problems.append(f"${name}: {text!r} is not SELECT DISTINCT <partition key> FROM <table>")
    return problems


def exposed_series(metrics: ConsumerMetrics) -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum",
                                                                               "_created")}
    return {family.name + suffix for family in metrics.registry.collect() for suffix in suffixes[family.type]}


def unknown_metrics(queries: list[PanelQuery], exposed: set[str]) -> list[str]:
    problems = []
    for query in queries:
        if query.datasource.get("type") != "prometheus":
            continue
        names = set(METRIC_NAME.findall(query.target.get("expr", "")))
        names |= {n for n in PROMETHEUS_BUILTIN_SERIES if re.search(rf"\b{n}\b", query.target.get("expr", ""))}
        problems += [f"{query.id}: {name}" for name in sorted(names - exposed - PROMETHEUS_BUILTIN_SERIES)]
        if not names:
            problems.append(f"{query.id}: reads no consumer metric")
    return problems


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def datasources_doc() -> dict:
    return yaml.safe_load(DATASOURCES_FILE.read_text())


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict]:
    return load_dashboards()


@pytest.fixture(scope="module")
def schemas():
    return cql_table_schemas()


# ------------------------------------------------------------------------------------ the real files


def test_provisioning_files_are_valid_yaml_for_grafana(datasources_doc):
    providers = yaml.safe_load(PROVIDERS_FILE.read_text())
    assert datasources_doc["apiVersion"] == 1 and providers["apiVersion"] == 1
    assert [p["type"] for p in providers["providers"]] == ["file"]
    assert providers["providers"][0]["options"]["path"].startswith("/")


def test_cassandra_postgres_and_prometheus_are_provisioned(datasources_doc):
    assert sorted(provisioned(datasources_doc).values()) == sorted(
        [CASSANDRA_PLUGIN, "grafana-postgresql-datasource", "prometheus"])
    cassandra = next(ds for ds in datasources_doc["datasources"] if ds["type"] == CASSANDRA_PLUGIN)
    assert {"keyspace", "consistency", "user"} <= set(cassandra["jsonData"])
    assert "password" in cassandra["secureJsonData"]


def test_credentials_and_addresses_come_from_the_environment(datasources_doc):
    assert settings_not_from_environment(datasources_doc) == []


def test_every_dashboard_is_json_with_a_unique_uid_and_unique_panel_ids(dashboards):
    assert set(MARKET_DASHBOARDS) | {"pipeline-health"} <= set(dashboards)
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids))
    for name, dashboard in dashboards.items():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        assert all(p.get("targets") for p in dashboard["panels"]), f"{name}: a panel without a query"


def test_every_query_and_variable_uses_a_provisioned_datasource(dashboards, datasources_doc):
    assert unknown_datasources(panel_queries(dashboards), dashboards, provisioned(datasources_doc)) == []


def test_market_dashboards_have_a_symbol_variable_listing_partition_keys(dashboards, schemas):
    for name in MARKET_DASHBOARDS:
        assert variables(dashboards[name])["symbol"]["type"] == "query"
        assert variable_query_problems(dashboards[name], schemas) == []


def test_every_variable_a_panel_uses_is_defined(dashboards):
    for query in cassandra_queries(dashboards):
        assert referenced_variables(query.target["target"]) <= set(variables(dashboards[query.dashboard])), query.id


def test_cassandra_panels_are_key_reads_with_time_macros_and_no_decimal_column(dashboards, schemas):
    queries = cassandra_queries(dashboards)
    assert len(queries) >= 8
    assert {q.id: cassandra_target_problems(q, dashboards, schemas) for q in queries} == {q.id: [] for q in queries}


def test_prometheus_panels_read_metrics_that_cdc_consume_exposes_or_the_contract_names(dashboards):
    health = [q for q in panel_queries({"pipeline-health": dashboards["pipeline-health"]})
              if q.datasource.get("type") == "prometheus"]
    assert unknown_metrics(health, exposed_series(ConsumerMetrics()) | CONTRACT_SERIES) == []
    used = " ".join(q.target["expr"] for q in health)
    for needed in ("cdc_events_consumed_total", "cdc_end_to_end_lag_seconds_bucket", "cdc_events_dlq_total",
                   "cdc_consumer_lag", "debezium_postgres_streaming_milliseconds_behind_source",
                   "debezium_postgres_streaming_queue_remaining_capacity", "cdc_poller_cycles_total",
                   "cdc_poller_rows_written_total", "cdc_poller_rate_limited_total", "cdc_poller_failures_total"):
        assert needed in used
    scrape_jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    # Every job a panel selects is one the shared Prometheus config scrapes.
    assert set(re.findall(r'job="([^"]+)"', used)) <= scrape_jobs


# ------------------------------------------------------------------------- the rules on bad documents

BAD_DATASOURCES = """
apiVersion: 1
datasources:
  - {name: C, uid: c, type: hadesarchitect-cassandra-datasource, url: "cassandra:9042",
     jsonData: {keyspace: market, consistency: "${CONSISTENCY}", user: "$CASS_USER"},
     secureJsonData: {password: hunter2}}
  - {name: P, uid: p, type: prometheus, url: "${PROM_URL}"}
"""


def bad_query(text: str, **target) -> PanelQuery:
    return PanelQuery("bad", "panel", "A", {"type": CASSANDRA_PLUGIN, "uid": "c"},
                      {"rawQuery": True, "target": text, **target})


def test_datasource_rules_name_inline_settings_and_unknown_uids():
    doc = yaml.safe_load(BAD_DATASOURCES)
    assert settings_not_from_environment(doc) == ["C.url", "C.secureJsonData.password", "C.jsonData.keyspace"]
    dashboards = {"bad": {"templating": {"list": [{"name": "s", "type": "query",
                                                    "datasource": {"type": "prometheus", "uid": "c"}}]}}}
    queries = [bad_query("SELECT 1"), PanelQuery("bad", "p", "B", {"type": "prometheus", "uid": "nope"}, {})]
    assert unknown_datasources(queries, dashboards, provisioned(doc)) == [
        "bad:p:B -> {'type': 'prometheus', 'uid': 'nope'}",
        "bad:$s -> {'type': 'prometheus', 'uid': 'c'}"]


@pytest.mark.parametrize("text, problem", [
    (("SELECT symbol, last_price, event_time FROM ticker_by_day WHERE symbol = '$symbol' "
     "AND event_time >= $__timeFrom AND event_time <= $__timeTo"), "does not restrict partition key column day by = or IN"),
    ("SELECT symbol, last_price, event_time FROM latest_prices WHERE last_price > 1 ALLOW FILTERING",
     "uses ALLOW FILTERING"),
    ("SELECT symbol, last_price, event_time FROM latest_prices WHERE last_price > 1",
     "filters on last_price, which is not a key column of latest_prices"),
    ("SELECT symbol, last_price_exact, event_time FROM latest_prices WHERE symbol = '$symbol'",
     "selects last_price_exact (decimal)"),
    ("SELECT * FROM latest_prices WHERE symbol = '$symbol'", "selects * (includes the decimal *_exact columns)"),
    ("SELECT symbol, last_price, event_time FROM ticker_by_day WHERE symbol = '$symbol' AND day = '2024-01-01'",
     "reads ticker_by_day without the time macros $__timeFrom and $__timeTo"),
    (("SELECT symbol, price, trade_time FROM trades_by_day WHERE symbol = '$symbol' AND day = '2024-01-01' "
     "AND trade_id = 1 AND trade_time >= $__timeFrom AND trade_time <= $__timeTo"),
     "restricts clustering column trade_id without fixing the ones before it"),
    ("SELECT symbol, last_price, event_time FROM latest_prices WHERE symbol = '$nosuch'",
     "$nosuch is neither a dashboard variable nor a datasource macro"),
    ("SELECT symbol, last_price, event_time FROM latest_prices WHERE symbol IN ($symbol)",
     "$symbol has 2 values: use ${symbol:singlequote} inside IN (...)"),
])
def test_cassandra_query_rules_name_what_is_wrong(text, problem, schemas):
    multi = "IN (" in text
    dashboards = {"bad": {"templating": {"list": [{"name": "symbol", "type": "query", "multi": multi}]}}}
    assert problem in cassandra_target_problems(bad_query(text), dashboards, schemas)


def test_a_query_in_the_configurator_mode_is_refused(schemas):
    dashboards = {"bad": {"templating": {"list": []}}}
    assert cassandra_target_problems(bad_query("", rawQuery=False), dashboards, schemas) == [
        "not a raw CQL query (rawQuery: true, target: CQL)"]


def test_variable_rule_refuses_a_query_that_reads_rows(schemas):
    dashboard = {"templating": {"list": [
        {"name": "symbol", "type": "query", "query": {"query": "SELECT symbol FROM latest_prices"}},
        {"name": "day", "type": "query", "query": "SELECT DISTINCT symbol, day FROM ticker_by_day"}]}}
    assert variable_query_problems(dashboard, schemas) == [
        "$symbol: 'SELECT symbol FROM latest_prices' is not SELECT DISTINCT <partition key> FROM <table>"]


def test_metric_rule_names_series_the_consumer_does_not_expose():
    queries = [PanelQuery("bad", "p", ref, {"type": "prometheus", "uid": "x"}, {"expr": expr}) for ref, expr in
               (("A", "rate(cdc_events_consumed_total[1m])"), ("B", "sum(cdc_events_consumed)"),
                ("C", "vector(1)"), ("D", "up"), ("E", "max(debezium_postgres_streaming_ms_behind_source)"),
                ("F", "sum(rate(cdc_poller_cycles_total[1m]))"))]
    assert unknown_metrics(queries, exposed_series(ConsumerMetrics()) | CONTRACT_SERIES) == [
        "bad:p:B: cdc_events_consumed", "bad:p:C: reads no consumer metric",
        "bad:p:E: debezium_postgres_streaming_ms_behind_source"]
