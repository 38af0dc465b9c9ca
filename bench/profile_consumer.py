"""Where `cdc consume`'s CPU goes at full speed: py-spy samples of one run, folded into stages.

The bench_consumer workload (ticker/kline alternating, 3 partitions, a fresh keyspace) is produced to a
topic; `cdc consume` runs until every event is applied, with `py-spy record --native` (every thread, C frames
included) attached from its first record on. Samples of a thread blocked in a wait are counted apart; each
other sample is charged to one stage by its innermost recognised frame:

  GC                    the cyclic collector (gc_collect* C frames)
  Kafka fetch           confluent_kafka / librdkafka (consume, poll, commit)
  driver request path   the cassandra driver: statement/batch encoding, execute_async, the I/O thread
  decode                decoder, Avro/JSON C extensions, orjson
  map                   mapping, conversions
  bind                  binding and batching in sink.py (bind, partition_slices, collapse), cql_values and
                        _cql_native's serializer (its row-mapping loop counts as map)
  bookkeeping           the consumer loop, offsets, Prometheus metrics and their /metrics page, logging, threads
  other                 anything else (start-up, imports)

py-spy is not a project dependency: `.venv/bin/pip install py-spy` first.

    .venv/bin/python bench/profile_consumer.py [--events 60000] [--rate 200] [--out profile.txt]
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_consumer import free_port, fresh_keyspace, produce, records, scrape
from cdc_consumer import cql_session, kafka_clients
from cdc_consumer.config import Settings
from tests.support import unique_name, wait_until

# (stage, pattern on one frame "function (file:line)" or "symbol (library)"), tried on the innermost frame
# first; the first frame that matches a stage decides.
STAGES = [
    ("GC", re.compile(r"gc_collect")),
    ("Kafka fetch", re.compile(r"confluent_kafka|rdkafka|rd_kafka")),
    ("driver request path", re.compile(r"cassandra/|libev")),
    ("decode", re.compile(r"decoder\.py|avro\.py|debezium\.py|_json_native|_avro_native|orjson")),
    ("map", re.compile(r"mapping\.py|conversions\.py|evolution\.py")),  # incl. _cql_native's row loop
    ("bind", re.compile(r"sink\.py|cql_values\.py|serialize_native")),
    ("bookkeeping", re.compile(r"consumer\.py|metrics\.py|dlq\.py|pause_state\.py|prometheus_client|socketserver|"
                               r"logging/|threading\.py|queue\.py")),
]


# A thread blocked in a wait (the driver's I/O loop between reads, Condition/Event waits): not CPU.
WAITING = re.compile(r"pthread_cond|acquire_lock|Condition\.wait|Event\.wait|epoll_wait|^poll \(libc|select|"
                     r"sem_wait|futex|nanosleep|sleep")


def stage_of(stack: list[str]) -> str:
    if any(WAITING.search(frame) for frame in stack[-4:]):
        return "waiting"
    for frame in reversed(stack):
        for stage, pattern in STAGES:
            if pattern.search(frame):
                return stage
    return "other"


def fold(collapsed: str) -> Counter:
    """py-spy's raw (collapsed) output -> samples per stage."""
    stages: Counter = Counter()
    for line in collapsed.splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        stages[stage_of(stack_text.split(";"))] += int(count)
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1

    settings = Settings.from_env()
    kafka = settings.kafka_client
    topic = unique_name("profile_consumer")
    produce(kafka, topic, 3, records(args.events))
    cluster, session = cql_session.connect(settings.cassandra)
    keyspace = fresh_keyspace(session)
    out = args.out or Path(tempfile.mkstemp(suffix=".txt")[1])
    port = free_port()
    consume = [sys.executable, "-m", "cdc_cli.cli", "consume", "--topics", topic, "--group", unique_name("prof"),
               "--cassandra-keyspace", keyspace, "--metrics-port", str(port), "--progress-every", "0"]
    process = subprocess.Popen(consume, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # py-spy attaches once records flow, so start-up (imports, mapping compilation) is not sampled
        wait_until(lambda: scrape(port)["consumed"] > 0, timeout=300, interval=0.05, what="the first record")
        spy = subprocess.Popen([py_spy, "record", "--pid", str(process.pid), "--native", "--format", "raw",
                                "--rate", str(args.rate), "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        start = time.perf_counter()
        wait_until(lambda: scrape(port)["applied"] >= args.events, timeout=1800, interval=0.05,
                   what=f"all {args.events} events applied")
        seconds = time.perf_counter() - start
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        spy.communicate(timeout=180)
    finally:
        process.terminate()
        process.wait(120)
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
        cluster.shutdown()
        kafka_clients.admin(kafka).delete_topics([topic])
    stages = fold(out.read_text())
    waiting = stages.pop("waiting", 0)
    total = sum(stages.values())
    print(f"{args.events} events in {seconds:.1f} s ({args.events / seconds:,.0f} events/s) under py-spy "
          f"({args.rate} samples/s, every thread, native frames); {total} busy samples, {waiting} waiting ({out})")
    for stage, samples in stages.most_common():
        print(f"  {stage:22} {samples / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
