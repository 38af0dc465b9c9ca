"""The C extensions of the hot path are built by `pip install -e .` (setup.py) and used by default.

The native-vs-Python comparison tests skip when an extension is missing; this test is the one named
failure that says so, so a broken build never passes as green.
"""

import importlib.machinery
import importlib.util

import pytest

from cdc_consumer import decoder
from cdc_consumer.mapping import writer as mapping_writer


@pytest.mark.parametrize("module", ["_avro_native", "_json_native", "_cql_native"])
def test_extension_is_built(module):
    spec = importlib.util.find_spec(f"cdc_consumer.{module}")  # None when no such module was built
    assert spec is not None, f"cdc_consumer.{module} is not built (make venv)"
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader), spec  # compiled C, not a stand-in


def test_the_hot_path_uses_the_native_code_by_default():
    assert decoder.Decoder().native
    assert decoder._json_native is not None
    assert mapping_writer._cql_native is not None
