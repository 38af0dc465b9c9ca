"""Builds the optional C extensions of the consumer's hot path; every other setting lives in setup.cfg.

_avro_native and _json_native decode Debezium records, _cql_native maps rows and serializes CQL values.
`optional=True`: where they cannot be compiled (no C compiler), the package still installs and the
pure-Python paths (kept as the tests' oracle) run instead, several times slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cdc_consumer._avro_native", ["cdc_consumer/_avro_native.c"], optional=True,
                             depends=["cdc_consumer/_native_common.h"]),
                   Extension("cdc_consumer._json_native", ["cdc_consumer/_json_native.c"], optional=True,
                             depends=["cdc_consumer/_native_common.h"]),
                   Extension("cdc_consumer._cql_native", ["cdc_consumer/_cql_native.c"], optional=True)])
