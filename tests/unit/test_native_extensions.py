"""The C extensions of the hot path are built by `pip install -e .` (setup.py) and used by default.

The native-vs-Python comparison tests skip when an extension is missing; this test is the one named
failure that says so, so a broken build never passes as green.
"""

import importlib.machinery
import importlib.util
import re
import subprocess
from pathlib import Path

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


SOURCES = sorted(Path(__file__).resolve().parents[2].joinpath("cdc_consumer").glob("_*native*.[ch]"))
# The only `_Py` symbols a public macro or inline function of CPython 3.11 leaves in an extension:
# Py_None/Py_True/Py_False are &_Py_NoneStruct/..., Py_DECREF calls _Py_Dealloc, PyObject_GC_New calls
# _PyObject_GC_New, and PyArg_ParseTuple[AndKeywords] is _PyArg_ParseTuple[AndKeywords]_SizeT under PY_SSIZE_T_CLEAN.
PUBLIC_MACRO_SYMBOLS = {"_Py_NoneStruct", "_Py_TrueStruct", "_Py_FalseStruct", "_Py_Dealloc", "_PyObject_GC_New",
                        "_PyArg_ParseTuple_SizeT", "_PyArg_ParseTupleAndKeywords_SizeT"}


def test_the_sources_name_no_private_cpython_api():
    assert len(SOURCES) == 4, SOURCES
    for source in SOURCES:
        private = sorted(set(re.findall(r"\b_Py\w+|\bPyUnstable\w+", source.read_text())))
        assert private == [], f"{source.name} uses private CPython API: {private}"


@pytest.mark.parametrize("module", ["_avro_native", "_json_native", "_cql_native"])
def test_the_built_extensions_import_no_private_cpython_symbol(module):
    library = importlib.util.find_spec(f"cdc_consumer.{module}").origin
    listing = subprocess.run(["nm", "-D", "--undefined-only", library], capture_output=True, text=True, check=True)
    imported = {line.split()[-1] for line in listing.stdout.splitlines() if line.strip()}
    assert "PyObject_Str" in imported  # the listing is real
    private = sorted(s for s in imported if s.startswith(("_Py", "PyUnstable")) and s not in PUBLIC_MACRO_SYMBOLS)
    assert private == [], f"{module} imports private CPython symbols: {private}"
