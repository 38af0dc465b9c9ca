"""cql/queries.cql: every statement says what it answers, reads partitions by key (no ALLOW FILTERING),
names no keyspace, and together they read every table of the schema.

The statements themselves run through cqlsh in tests/integration/test_query_book.py.
"""

from __future__ import annotations

import re

import pytest

from tests.unit.cql_queries import (
    QUERY_BOOK,
    key_read_problems,
    parse_select,
    query_book,
)
from tests.unit.cql_tables import cql_table_schemas

ENTRIES = query_book(QUERY_BOOK.read_text(encoding="utf-8"))
SCHEMAS = cql_table_schemas()


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"line{e.line}" for e in ENTRIES])
def test_statement_is_a_commented_key_read(entry):
    assert len(entry.comment) > 20, f"line {entry.line}: say what the statement answers"
    assert key_read_problems(entry.statement, SCHEMAS) == []
    assert not re.search(r"\bFROM\s+\w+\.\w+", entry.statement, re.IGNORECASE), "no keyspace: cqlsh -k sets it"


def test_the_book_reads_every_table_and_covers_the_questions():
    assert {parse_select(e.statement).table for e in ENTRIES} == set(SCHEMAS)
    comments = " ".join(e.comment.lower() for e in ENTRIES)
    for question in ("latest price", "last 100 ticks", "candles", "top movers", "last 5 minutes",
                     "rows per bucket"):
        assert question in comments


def test_parser_pairs_each_statement_with_the_comment_above_it():
    text = ("-- header, not attached\n\n-- First question\n-- on two lines.\nSELECT a\nFROM t;\n\n"
            "SELECT b FROM t;\n")
    entries = query_book(text)
    assert [(e.comment, e.statement, e.line) for e in entries] == [
        ("First question on two lines.", "SELECT a FROM t", 5), ("", "SELECT b FROM t", 8)]


def test_parser_refuses_an_unterminated_statement():
    with pytest.raises(ValueError, match="line 2 does not end with ';'"):
        query_book("-- q\nSELECT a FROM t\n")
