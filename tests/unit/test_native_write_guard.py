"""_cql_native fills the slots of mapping.Write itself: the field list it assumes is checked against the class.

The oracle is dataclasses.fields of the Python class. A Write with other fields (added, dropped, renamed,
reordered, not slots) makes importing cdc_consumer.mapping fail with a message naming both lists, and a
Converter refuses such a class too.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from cdc_consumer import mapping
from cdc_consumer.conversions import CONVERSIONS
from cdc_consumer.mapping import CompiledColumn, TargetWriter, Write

native = pytest.importorskip("cdc_consumer._cql_native")


def write_class(names: list[str], slots: bool = True) -> type:
    return dataclasses.make_dataclass("Write", [(name, object) for name in names], slots=slots)


def test_the_fields_c_assumes_are_those_of_mapping_write():
    assert native.WRITE_FIELDS == ("target", "key", "values", "timestamp", "order")
    assert tuple(f.name for f in dataclasses.fields(Write)) == native.WRITE_FIELDS
    assert native.check_write(Write) is None
    assert native.check_write(write_class(list(native.WRITE_FIELDS))) is None  # the same shape passes


@pytest.mark.parametrize("names", [
    ["target", "key", "values", "timestamp", "order", "attempt"],
    ["target", "key", "values", "timestamp"],
    ["target", "key", "row", "timestamp", "order"],
    ["key", "target", "values", "timestamp", "order"],
], ids=["added", "dropped", "renamed", "reordered"])
def test_another_field_list_is_refused_naming_both(names):
    with pytest.raises(TypeError) as refused:
        native.check_write(write_class(names))
    message = str(refused.value)
    assert str(tuple(names)) in message and "('target', 'key', 'values', 'timestamp', 'order')" in message
    assert "_cql_native.c" in message


def test_a_write_without_slots_or_not_a_dataclass_is_refused():
    with pytest.raises(TypeError, match=r"Write\.target is not a slot"):
        native.check_write(write_class(list(native.WRITE_FIELDS), slots=False))
    with pytest.raises(TypeError, match="is not a dataclass"):
        native.check_write(tuple)
    with pytest.raises(TypeError, match="must be a class"):
        native.check_write(Write(None, (), None, 0, ()))


def test_a_converter_refuses_a_write_class_with_other_fields():
    writer = TargetWriter("t", (CompiledColumn("k", ("k",), CONVERSIONS["text"]),), ("k",), 1, "delete", "skip")
    plan = ((0, ("k",), str, 1),)
    arguments = (writer._conversion_failed, writer._value_at, writer._bad_key, writer.upsert_python)
    assert type(native.Converter(plan, (0,), *arguments, Write, writer)) is native.Converter
    with pytest.raises(TypeError, match="'attempt'"):
        native.Converter(plan, (0,), *arguments, write_class([*native.WRITE_FIELDS, "attempt"]), writer)


def test_importing_mapping_fails_when_write_gains_a_field():
    """A fresh interpreter whose @dataclass adds a field to any class named Write: mapping cannot be imported."""
    script = textwrap.dedent("""
        import dataclasses
        plain = dataclasses.dataclass

        def with_extra_field(cls=None, /, **options):
            def decorate(cls):
                if cls.__name__ == "Write":
                    cls.__annotations__["attempt"] = "int"
                    cls.attempt = 0
                return plain(cls, **options)
            return decorate if cls is None else decorate(cls)

        dataclasses.dataclass = with_extra_field
        import cdc_consumer.mapping
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "TypeError" in result.stderr and "'attempt'" in result.stderr and "WRITE_MEMBER_NAMES" in result.stderr
    assert mapping.Write is Write  # this interpreter's mapping is untouched
