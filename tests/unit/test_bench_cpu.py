"""The CPU accounting the benchmarks use to show a machine's ceiling (bench/cpu.py), judged by what a child
process measures of itself (time.process_time) and by the process tree the test builds."""

import os
import subprocess
import sys
import time

from bench.cpu import CpuShares, MachineCpu, WakeupProbe, cpu_seconds, main_thread_cpu_seconds, with_descendants
from tests.support import wait_until

BURN = """
import sys, time
end = time.process_time() + float(sys.argv[1])
while time.process_time() < end:
    pass
print(time.process_time(), flush=True)
sys.stdin.read()
"""


def burner(cpu_seconds_to_burn: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BURN, str(cpu_seconds_to_burn)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_cpu_seconds_of_a_process_match_its_own_process_time():
    child = burner(0.6)
    try:
        reported = float(child.stdout.readline())  # the child's own count, once it has burned its share
        measured = cpu_seconds([child.pid])
    finally:
        child.communicate("")
    assert reported >= 0.6
    assert abs(measured - reported) <= 0.05  # clock ticks are 10 ms; interpreter start-up is in both


def test_the_main_thread_alone_holds_a_single_threaded_programs_cpu():
    child = burner(0.4)
    try:
        reported = float(child.stdout.readline())
        assert abs(main_thread_cpu_seconds(child.pid) - reported) <= 0.05
    finally:
        child.communicate("")


def test_a_process_that_is_gone_counts_nothing():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_seconds([child.pid]) == 0.0


def test_descendants_include_grandchildren():
    grandparent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', "
         "'import sys; sys.stdin.read()'], stdin=subprocess.PIPE); print(p.pid, flush=True); sys.stdin.read(); "
         "p.communicate(b'')"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(grandparent.stdout.readline())
        found = with_descendants([grandparent.pid])
        assert grandparent.pid in found and grandchild in found
        assert os.getpid() not in found
    finally:
        grandparent.communicate("")


def test_cpu_shares_attribute_a_busy_process_about_one_core():
    child = burner(60)  # busy for the whole window, stopped below
    try:
        shares = CpuShares({"burner": lambda: [child.pid], "idle": list})
        machine = MachineCpu.now()
        shares.start()
        time.sleep(0.5)  # the measured window itself, not a synchronisation
        used = shares.stop()
        busy = MachineCpu.now().busy_share_since(machine)
    finally:
        child.kill()
        child.wait()
    assert used["idle"] == 0.0
    assert 0.3 <= used["burner"] <= 1.05  # one thread cannot use more than one core; a loaded machine gives less
    assert busy >= used["burner"] / (os.cpu_count() or 1) - 0.1


def test_cpu_shares_count_a_process_started_during_the_window_from_zero():
    started: list[int] = []
    shares = CpuShares({"late": lambda: list(started)})
    shares.start()
    child = burner(0.3)
    try:
        started.append(child.pid)
        reported = float(child.stdout.readline())
        used = shares.stop()
        assert used["late"] * (time.perf_counter() - shares.started) >= reported - 0.05
    finally:
        child.communicate("")


def test_wakeup_probe_reports_one_delay_per_sleep():
    probe = WakeupProbe()
    wait_until(lambda: cpu_seconds([probe.process.pid]) > 0.05, timeout=30, what="the probe sleeping a while")
    delays = probe.stop()
    assert len(delays) >= 10
    assert all(delay >= -0.05 for delay in delays)  # time.sleep never wakes meaningfully early
