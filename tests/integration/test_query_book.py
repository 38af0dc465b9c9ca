"""Every statement of cql/queries.cql runs through cqlsh (the PyPI package) against the real Cassandra node,
on a keyspace holding pipeline-written data: exit 0, nothing on stderr, and at least one row."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.market_data import market_keyspace  # noqa: F401 (fixture)
from tests.unit.cql_queries import QUERY_BOOK, query_book

pytestmark = pytest.mark.integration

ENTRIES = query_book(QUERY_BOOK.read_text(encoding="utf-8"))
ROW_COUNT = re.compile(r"^\((\d+) rows\)$", re.MULTILINE)


def cqlsh(settings, keyspace: str, *arguments: str) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("cqlsh")
    assert executable.exists(), f"cqlsh is not installed beside {sys.executable} (pip install cqlsh)"
    cassandra = settings.cassandra
    return subprocess.run([str(executable), cassandra.hosts[0], str(cassandra.port), "-k", keyspace,
                           "--request-timeout", "30", *arguments],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"line{e.line}" for e in ENTRIES])
def test_statement_answers_its_question_through_cqlsh(market_keyspace, settings, entry):  # noqa: F811
    result = cqlsh(settings, market_keyspace.keyspace, "-e", entry.statement)
    assert (result.returncode, result.stderr) == (0, ""), entry.comment
    counts = [int(n) for n in ROW_COUNT.findall(result.stdout)]
    assert counts and counts[0] >= 1, f"no row for: {entry.comment}\n{result.stdout}"


def test_the_whole_book_runs_as_one_cqlsh_script(market_keyspace, settings):  # noqa: F811
    result = cqlsh(settings, market_keyspace.keyspace, "-f", str(QUERY_BOOK))
    assert (result.returncode, result.stderr) == (0, "")
    assert len(ROW_COUNT.findall(result.stdout)) == len(ENTRIES)


def test_a_failing_statement_is_reported_by_cqlsh(market_keyspace, settings):  # noqa: F811
    """The checks above can fail: cqlsh exits non-zero and writes to stderr for a rejected query."""
    result = cqlsh(settings, market_keyspace.keyspace, "-e",
                   "SELECT symbol FROM ticker_by_day WHERE last_price > 1")
    assert result.returncode != 0
    assert "ALLOW FILTERING" in result.stderr
