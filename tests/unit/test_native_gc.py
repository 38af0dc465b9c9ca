"""Every C type that holds Python objects is GC-tracked: a reference cycle through one is freed by gc.collect().

Each test builds a cycle native object -> Python object -> native object, with a sentinel reachable only
from inside the cycle, drops every outside reference, and checks that the sentinel is alive before the
collection (the cycle is real) and gone after it (the collector saw through the native object). An
untracked type would keep the whole cycle, sentinel included, for the life of the process.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import pytest

from cdc_consumer.conversions import CONVERSIONS
from cdc_consumer.events import UNAVAILABLE, ChangeEvent, Source
from cdc_consumer.mapping import CompiledColumn, TargetWriter
from cdc_consumer.mapping import writer as mapping_writer

json_native = pytest.importorskip("cdc_consumer._json_native")
avro_native = pytest.importorskip("cdc_consumer._avro_native")
cql_native = pytest.importorskip("cdc_consumer._cql_native")


class Sentinel:
    """Stands for whatever a converter keeps alive (a decoder, a schema, a registry client)."""


def collected(build: Callable[[list], object]) -> bool:
    """Whether a cycle through build(holder)'s native object is freed: holder is a list the native object
    reaches (through a callable or a dict it holds); the native object is appended to it."""
    was_enabled = gc.isenabled()
    gc.disable()  # no collection before the outside references are gone
    try:
        holder: list = [Sentinel()]
        sentinel = weakref.ref(holder[0])
        native = build(holder)
        assert gc.is_tracked(native), f"{type(native).__name__} is not GC-tracked"
        holder.append(native)
        del holder, native
        alive_before = sentinel() is not None  # reference counting alone cannot free a cycle
        gc.collect()
        return alive_before and sentinel() is None
    finally:
        if was_enabled:
            gc.enable()


def keeping(holder: list) -> Callable:
    """A converter that holds `holder` (and so the native object that holds the converter)."""
    def convert(value, _holder=holder):
        return value
    return convert


EVENT_TYPES = (ChangeEvent, Source, {}, {})


@pytest.mark.parametrize("description", [
    lambda c: ("call", c),
    lambda c: ("struct", (("a", ("call", c), "__debezium_unavailable_value"),), c),
    lambda c: ("array", ("integer", 32, c), c),
    lambda c: ("decimal", 2, None, c),
], ids=["call", "struct", "array", "decimal"])
def test_a_json_program_in_a_cycle_is_freed(description):
    assert collected(lambda holder: json_native.Program(description(keeping(holder)), UNAVAILABLE))


def test_a_json_envelope_program_in_a_cycle_is_freed():
    def build(holder):
        row = ("struct", (("a", ("call", keeping(holder)), "x"),), keeping(holder))
        return json_native.Program(("envelope", row, None), UNAVAILABLE, EVENT_TYPES)
    assert collected(build)


def test_a_cycle_through_the_event_types_of_a_program_is_freed():
    def build(holder):
        ops = {"holder": holder}  # a dict the program's event shape holds
        return json_native.Program(("envelope", None, None), UNAVAILABLE, (ChangeEvent, Source, ops, {}))
    assert collected(build)
    assert collected(lambda holder: avro_native.Program(("record", ()), False, UNAVAILABLE,
                                                         (ChangeEvent, Source, {}, {"holder": holder})))


def test_known_schemas_in_a_cycle_are_freed():
    assert collected(lambda holder: json_native.KnownSchemas(keeping(holder), dict))
    assert collected(lambda holder: json_native.KnownSchemas(dict, keeping(holder)))

    def through_a_program(holder):
        known = json_native.KnownSchemas(dict, dict)
        known.add(b"{}", json_native.Program(("call", keeping(holder)), UNAVAILABLE), None)
        return known
    assert collected(through_a_program)


@pytest.mark.parametrize("description", [
    lambda c: ("call", ("long", None), c),
    lambda c: ("string", ("zoned_timestamp", c)),
    lambda c: ("record", (("a", ("union", (("null",), ("call", ("long", None), c))), None),)),
    lambda c: ("array", ("map", ("call", ("string", None), c))),
], ids=["call", "zoned_timestamp", "record-union", "array-map"])
def test_an_avro_program_in_a_cycle_is_freed(description):
    assert collected(lambda holder: avro_native.Program(description(keeping(holder)), True, UNAVAILABLE))


def test_an_avro_program_with_a_placeholder_form_in_a_cycle_is_freed():
    assert collected(lambda holder: avro_native.Program(("record", (("a", ("long", None), [holder]),)), True,
                                                        UNAVAILABLE))


def test_a_serializer_in_a_cycle_is_freed():
    assert collected(lambda holder: cql_native.Serializer((0, 0), (keeping(holder), str)))


def test_a_target_writer_and_its_converter_are_freed():
    """The real cycle: TargetWriter -> its C Converter -> the writer and its bound methods."""
    assert mapping_writer._cql_native is cql_native

    def build(holder):
        writer = TargetWriter("t", (CompiledColumn("k", ("k",), CONVERSIONS["text"]),), ("k",), 1, "delete", "skip")
        writer.kept = holder  # what the writer holds stands for its prepared statements, binders, ...
        converter = writer._upsert
        assert type(converter) is cql_native.Converter
        return converter
    assert collected(build)


def test_programs_still_work_after_surviving_a_collection():
    """Tracking must not disturb a live object: collect while programs are in use, then use them."""
    json_program = json_native.Program(("struct", (("a", ("integer", 32, int), "x"),), dict), UNAVAILABLE)
    avro_program = avro_native.Program(("record", (("a", ("long", None), None),)), True, UNAVAILABLE)
    serializer = cql_native.Serializer((0,), (lambda value: b"%d" % value,))
    gc.collect()
    assert json_program.convert({"a": 5}) == {"a": 5}
    assert json_program.convert({"a": "x"}) == {"a": UNAVAILABLE}
    assert avro_program.read(b"\x0a") == {"a": 5}
    assert serializer([7]) == [b"7"]
