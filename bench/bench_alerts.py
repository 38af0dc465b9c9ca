"""Benchmark: `cdc alerts` evaluation with 100 rules, events/s.

Events are real Debezium ticker_24h envelopes (bench/envelopes.py) for 100 symbols, one per symbol and
second, prices a random walk. The 100 rules use five windows (1m-15m), thresholds 0.5-10 %, all three
directions, and globs from `*` to a single symbol, so each symbol is evaluated by 20-100 rules.

Measured side by side in the same run (best of interleaved rounds, one process; each as events per
wall-clock second and per CPU second of the process, the steadier figure when other work shares the cores):
- `decode_events_per_s`: Decoder.decode alone (the floor every evaluation pays);
- `events_per_s`: decode + PriceMoveEngine.observe with the 100 rules (what `cdc alerts` does per record);
- `kafka_events_per_s`: the whole loop (AlertStream: consume from a local Kafka topic, evaluate, push the
  alerts it produces to the real Alertmanager, commit) when Kafka and Alertmanager answer.

    .venv/bin/python bench/bench_alerts.py [--events 50000] [--rounds 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.envelopes import ticker_changes
from cdc_consumer.alert_stream import ticker_observation
from cdc_consumer.config import Settings
from cdc_consumer.decoder import Decoder
from cdc_consumer.price_alerts import PriceMoveEngine, Rule

SYMBOLS = [f"SYM{i:04d}USDT" for i in range(100)]
WINDOWS_MS = (60_000, 120_000, 300_000, 600_000, 900_000)
GLOBS = ("*", "SYM00*", "SYM000?USDT", "SYM0[0-4]*", "SYM0042USDT")


def hundred_rules() -> list[Rule]:
    return [Rule(f"r{i}", (GLOBS[i % len(GLOBS)],), WINDOWS_MS[i % len(WINDOWS_MS)],
                 Decimal("0.5") + Decimal(i % 20) / 2, ("up", "down", "either")[i % 3], None,
                 (("severity", "bench"),)) for i in range(100)]


def records(count: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(7)
    prices = {s: Decimal(rng.randint(1000, 90_000)) for s in SYMBOLS}
    start = datetime.now(UTC) - timedelta(seconds=count // len(SYMBOLS) + 60)
    rows = []
    for i in range(count):
        symbol = SYMBOLS[i % len(SYMBOLS)]
        prices[symbol] = max(Decimal(1), prices[symbol] + Decimal(rng.randint(-300, 300)) / 100)
        rows.append({"symbol": symbol, "event_time": start + timedelta(seconds=i // len(SYMBOLS)),
                     "last_price": prices[symbol], "quote_volume": Decimal("123456789.12345678")})
    return ticker_changes(rows).records


def decode_only(recs) -> None:
    decoder = Decoder()
    for key, value in recs:
        decoder.decode("cdc.public.ticker_24h", key, value)


def evaluate(recs) -> int:
    decoder, engine = Decoder(), PriceMoveEngine(hundred_rules())
    now_ms, updates = int(time.time() * 1000), 0
    for key, value in recs:
        observation = ticker_observation(decoder.decode("cdc.public.ticker_24h", key, value))
        assert observation is not None  # every record is a live ticker change
        updates += len(engine.observe(*observation, now_ms))
    return updates


def timed(fn, recs) -> tuple[float, float]:
    """(events per wall-clock second, events per CPU second of this process): on a machine shared with
    other work the CPU-time figure is the steadier one."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(recs)
    return len(recs) / (time.perf_counter() - wall), len(recs) / (time.process_time() - cpu)


def through_kafka(recs, settings: Settings) -> dict:
    """AlertStream end to end on a fresh topic; None when Kafka or Alertmanager does not answer."""
    import requests
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from cdc_consumer.alert_stream import AlertStream
    from cdc_consumer.alertmanager import AlertmanagerClient

    try:
        requests.get(f"{settings.alertmanager_url}/api/v2/status", timeout=3).raise_for_status()
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        admin.list_topics(timeout=5)
    except Exception as exc:  # noqa: BLE001 - reported, the in-process figures still stand
        print(f"kafka run skipped: {exc}")
        return {}
    topic = f"bench_alerts_{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20})
    for key, value in recs:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)
    # A new group would replay what is already there without sending: commit offset 0 so all of it is live.
    from confluent_kafka import Consumer, TopicPartition

    seed = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{topic}-g"})
    seed.commit(offsets=[TopicPartition(topic, p, 0) for p in range(3)], asynchronous=False)
    seed.close()
    engine = PriceMoveEngine(hundred_rules())
    client = AlertmanagerClient(settings.alertmanager_url)
    stream = AlertStream(kafka=settings.kafka_client, topic=topic, group=f"{topic}-g", engine=engine,
                         alertmanager=client)
    stop = threading.Event()
    started = time.perf_counter()
    runner = threading.Thread(target=lambda: stream.run(stop), daemon=True)
    runner.start()
    stream_done = time.monotonic() + 300
    while stream.stats.records < len(recs) and time.monotonic() < stream_done:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    stop.set()
    runner.join(30)
    client.close()
    admin.delete_topics([topic])
    return {"alerts.kafka_events_per_s": round(stream.stats.records / elapsed),
            "alerts.kafka_alerts_pushed": sum(stream.stats.pushed.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    recs = records(args.events)
    best = {"decode": (0.0, 0.0), "evaluate": (0.0, 0.0)}
    for _ in range(args.rounds):
        for name, fn in (("decode", decode_only), ("evaluate", evaluate)):
            wall, cpu = timed(fn, recs)
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    updates = evaluate(recs)
    results = {"alerts.rules": 100, "alerts.events": args.events,
               "alerts.decode_events_per_s": round(best["decode"][0]), "alerts.events_per_s": round(best["evaluate"][0]),
               "alerts.decode_events_per_cpu_s": round(best["decode"][1]),
               "alerts.events_per_cpu_s": round(best["evaluate"][1]),
               "alerts.evaluation_share_of_cpu": round(1 - best["evaluate"][1] / best["decode"][1], 3),
               "alerts.updates_produced": updates}
    if not args.no_kafka:
        results.update(through_kafka(recs, Settings.from_env()))
    for name, value in results.items():
        print(f"{name:40s} {value}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
