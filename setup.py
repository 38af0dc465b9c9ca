"""Builds the optional C extension cdc_consumer._avro_native; every other setting lives in setup.cfg.

`optional=True`: where it cannot be compiled (no C compiler), the package still installs and
cdc_consumer.avro reads Avro with fastavro instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cdc_consumer._avro_native", ["cdc_consumer/_avro_native.c"], optional=True,
                             depends=["cdc_consumer/_native_common.h"]),
                   Extension("cdc_consumer._json_native", ["cdc_consumer/_json_native.c"], optional=True,
                             depends=["cdc_consumer/_native_common.h"]),
                   Extension("cdc_consumer._cql_native", ["cdc_consumer/_cql_native.c"], optional=True)])
