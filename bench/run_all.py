"""`make bench`: run every benchmark once and collect their figures into bench/results.json.

Each benchmark measures its own baseline side by side in the same run (ratios are never taken across
runs). The services must be up (`make bench` starts the native stack if needed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ("bench_decoder.py", "bench_poller.py", "bench_consumer.py", "bench_e2e.py", "bench_avro.py",
              "bench_alerts.py", "bench_secure.py", "bench_cluster.py", "bench_peer.py")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    results: dict = {"machine": {"cores": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version()},
                     "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    failed = []
    for name in BENCHMARKS:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            print(f"\n### {name}", flush=True)
            code = subprocess.run([sys.executable, str(BENCH / name), "--json-out", out.name]).returncode
            if code != 0:
                failed.append(name)
                continue
            results.update(json.loads(Path(out.name).read_text() or "{}"))
    (BENCH / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {BENCH / 'results.json'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
