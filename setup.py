"""Builds the optional C extensions of the consumer's hot path; every other setting lives in setup.cfg.

_avro_native and _json_native decode Debezium records, _cql_native maps rows and serializes CQL values.
`optional=True`: where they cannot be compiled (no C compiler), the package still installs and the
pure-Python paths (kept as the tests' oracle) run instead, several times slower.
Warnings are errors (-Wall -Wextra -Werror): a warning fails the build of that extension, and
tests/unit/test_native_extensions.py then fails naming the module, so the code stays warning-free.
"""

from setuptools import Extension, setup

WARNINGS_ARE_ERRORS = ["-Wall", "-Wextra", "-Werror"]


def native(name: str, *headers: str) -> Extension:
    return Extension(f"cdc_consumer.{name}", [f"cdc_consumer/{name}.c"], depends=list(headers), optional=True,
                     extra_compile_args=WARNINGS_ARE_ERRORS)


setup(ext_modules=[native("_avro_native", "cdc_consumer/_native_common.h"),
                   native("_json_native", "cdc_consumer/_native_common.h"),
                   native("_cql_native")])
