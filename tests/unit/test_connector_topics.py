"""Which topics `cdc register-connector` creates before the connector's first change."""

from __future__ import annotations

from connectors.topics import table_topics


def test_each_plainly_named_table_gets_its_prefixed_topic_with_the_creation_settings():
    plan = table_topics({"topic.prefix": "cdc", "table.include.list": "public.klines, public.trades",
                         "topic.creation.default.partitions": "6",
                         "topic.creation.default.replication.factor": "3"})
    assert plan.topics == ("cdc.public.klines", "cdc.public.trades")
    assert (plan.partitions, plan.replication) == (6, 3)
    assert plan.left_to_debezium == ()


def test_without_creation_settings_the_defaults_are_three_partitions_replication_one():
    plan = table_topics({"topic.prefix": "p", "table.include.list": "public.ticker_24h"})
    assert (plan.topics, plan.partitions, plan.replication) == (("p.public.ticker_24h",), 3, 1)


def test_a_pattern_entry_is_left_to_debezium():
    plan = table_topics({"topic.prefix": "cdc", "table.include.list": "public.klines,public.order_.*"})
    assert plan.topics == ("cdc.public.klines",)
    assert plan.left_to_debezium == ("public.order_.*",)


def test_no_prefix_or_no_include_list_means_no_topics():
    assert table_topics({"table.include.list": "public.klines"}).topics == ()
    assert table_topics({"topic.prefix": "cdc"}).topics == ()
