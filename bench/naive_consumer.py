"""Baseline for bench_consumer.py: a Kafka -> Cassandra consumer written the way the seed projects do it.

Offsets are auto-committed (a crash after the commit and before the insert loses the change) and every
row is written with one synchronous INSERT, message after message. Decoding and row mapping reuse the
project's own code, so the comparison measures the delivery/writing design and nothing else.

Usage: python bench/naive_consumer.py --topic T --keyspace K --count N [--group G]
Prints one JSON line: {"events": N, "seconds": time from the first message to the last insert}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import Settings
from cdc_consumer.decoder import Decoder
from cdc_consumer.mapping import compile_mapping, describe_tables, load_mapping


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--keyspace", required=True)
    parser.add_argument("--count", type=int, required=True, help="stop after this many messages")
    parser.add_argument("--group", default="naive-consumer")
    args = parser.parse_args()

    settings = Settings.from_env()
    cluster, session = cql_session.connect(settings.cassandra, keyspace=args.keyspace)
    mapping = compile_mapping(load_mapping(), describe_tables(session, args.keyspace), session.prepare,
                              args.keyspace)
    decoder = Decoder()
    consumer = kafka_clients.consumer(settings.kafka_client, {"group.id": args.group, "enable.auto.commit": True,
                                                       "auto.offset.reset": "earliest"})
    consumer.subscribe([args.topic])
    count, first = 0, None
    try:
        while count < args.count:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            first = first or time.perf_counter()
            topic = message.topic()
            assert topic is not None  # a message without error() has its topic
            event = decoder.decode(topic, message.key(), message.value(), message.headers(),
                                   message.partition(), message.offset())
            for write in mapping.writes(event):  # one synchronous round trip per row
                statements, values = write.target.statements, write.values
                assert statements is not None and values is not None  # prepared with the session; an upsert
                session.execute(statements.insert, [*values, write.timestamp])
            count += 1
        assert first is not None  # at least one message (--count > 0)
        seconds = time.perf_counter() - first
    finally:
        consumer.close()
        cluster.shutdown()
    print(orjson.dumps({"events": count, "seconds": seconds}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
