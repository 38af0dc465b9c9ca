"""The Kafka topics a Debezium connector will write, created before its first change.

Debezium (through Connect's topic creation) creates a table's topic with that table's first change, and a
consumer subscribed by regex only finds a new topic at its next metadata refresh, followed by a rebalance:
on a fresh stack the first changes waited seconds. `cdc register-connector` therefore creates every
captured table's topic beforehand, with the connector's `topic.creation.default.*` partitions and
replication factor (created by `kafka_clients.ensure_topics`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PARTITIONS = 3
DEFAULT_REPLICATION = 1
# A table.include.list entry that is a plain `schema.table` name (Debezium reads entries as regexes; an entry
# using regex syntax names topics that cannot be known in advance, so it is left to Debezium).
_PLAIN_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True)
class TopicPlan:
    topics: tuple[str, ...]  # one per plainly named captured table
    partitions: int
    replication: int
    left_to_debezium: tuple[str, ...]  # include-list entries that are patterns


def table_topics(config: Mapping[str, str]) -> TopicPlan:
    """The topics of a Debezium source connector config: `<topic.prefix>.<schema>.<table>` for each entry of
    `table.include.list`, with `topic.creation.default.partitions` / `.replication.factor` (defaults 3, 1)."""
    prefix = config.get("topic.prefix", "")
    entries = [e.strip() for e in config.get("table.include.list", "").split(",") if e.strip()]
    plain = [e for e in entries if _PLAIN_TABLE.match(e)]
    return TopicPlan(topics=tuple(f"{prefix}.{table}" for table in plain) if prefix else (),
                     partitions=int(config.get("topic.creation.default.partitions", DEFAULT_PARTITIONS)),
                     replication=int(config.get("topic.creation.default.replication.factor", DEFAULT_REPLICATION)),
                     left_to_debezium=tuple(e for e in entries if e not in plain))
