/* _cql_native: the consumer's per-row hot loops after decoding, in C.

   Why native: turning one decoded row into the values of a target table (mapping.TargetWriter.upsert)
   and those values into the bytes of a prepared statement (cql_values.StatementBinder.bind) cost about
   as much CPU as decoding; both are a Python loop over ~30 columns calling a small function per column.

   Converter(plan, key_positions, on_error, value, bad_key, python, Write, writer): TargetWriter.upsert
   once the null of the row is chosen. `plan` holds one (kind, sources, convert, arity) per column, built
   by mapping/writer.py from the same CompiledColumn and Conversion objects the Python loop uses. Calling it
   with (row, null, timestamp, order) returns Write(writer, key, values, timestamp, order), its slots
   filled directly (the dataclass __init__ cost as much as a tenth of the loop). Missing source columns,
   None, UNSET_VALUE and UNAVAILABLE are handled exactly as the Python loop does. Each native kind
   converts only the value types whose Python result is certain (an exact Decimal, float, int, ASCII
   str, an exact datetime in UTC or without tzinfo, ...); any other value goes to the Python conversion
   itself, so every ConversionError and its message stays the Python one. Call-backs into the mapping package:
   on_error(column index, ConversionError) and bad_key(values) raise the UnmappableRecord the Python loop
   raises; value(column index, row, skip_nulls) reads a column without source columns (never in a valid
   mapping); python(row, null, timestamp, order), the Python loop, takes rows that are not exact dicts.

   Serializer(kinds, fallbacks): StatementBinder.bind's loop. Calling it with the values returns their
   serialized list (None and UNSET_VALUE kept). A native kind serializes only the exact Python types the
   Python fast path takes (cql_values._FAST_TYPES) and only values inside its range; anything else is
   passed to that column's Python serializer, so the bytes and the errors are the driver's.

   Decimal: CQL decimal = int32 big-endian scale + minimal two's-complement varint of the unscaled
   value. Scale and digits are read exactly from str(value) (no context arithmetic, any exponent form:
   1E+3 gives scale -3 as the driver does); values with more digits than 128 bits hold, or a scale
   outside int32, go to the Python serializer. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static PyObject *DecimalType;
static PyObject *IsFinite;        /* Decimal.is_finite */
static PyObject *Unset;           /* cassandra.query.UNSET_VALUE */
static PyObject *Unavailable;     /* cdc_consumer.events.UNAVAILABLE */
static PyObject *ConversionError; /* cdc_consumer.conversions.ConversionError */
static PyObject *SubHour;         /* cdc_consumer.conversions.SUB_HOUR_INTERVALS */
static PyObject *HourOrLonger;    /* cdc_consumer.conversions.HOUR_OR_LONGER_INTERVALS */
static PyObject *DataclassFields; /* dataclasses.fields */

#define MICROS_PER_DAY 86400000000LL
#define EPOCH_ORDINAL 719163LL  /* date(1970, 1, 1).toordinal() */

/* ------------------------------------------------------------------------------ conversions */

typedef enum {
    K_CALL, K_TEXT, K_SMALLINT, K_INT, K_BIGINT, K_BOOLEAN, K_DECIMAL, K_DOUBLE, K_TIMESTAMP_MS,
    K_EPOCH_US, K_DATE, K_DAY, K_MONTH, K_KLINE_BUCKET, K_BLOB, K_COUNT
} ConversionKind;

static const char *const CONVERSION_NAMES[K_COUNT] = {
    NULL, "text", "smallint", "int", "bigint", "boolean", "decimal", "double", "timestamp",
    "epoch_us", "date", "day", "month", "kline_bucket", "blob",
};

/* ------------------------------------------------------------------- Decimal text, exactly */

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 Wide;
#define MAX_DIGITS 38  /* 10^38 - 1 < 2^127 */
#else
typedef uint64_t Wide;
#define MAX_DIGITS 18
#endif

/* A finite Decimal as its text says: (-1)^minus * unscaled * 10^-scale. */
typedef struct {
    int minus;
    Wide unscaled;
    int64_t scale;
} DecimalText;

/* Parses str(Decimal): [-]digits[.digits][E[+-]digits]. 1 when parsed, 0 when not handled here
   (Infinity, NaN, more than MAX_DIGITS significant digits, an exponent beyond 15 digits), -1 on error. */
static int parse_decimal(PyObject *text, DecimalText *out)
{
    Py_ssize_t length;
    const char *p = PyUnicode_AsUTF8AndSize(text, &length);
    if (p == NULL)
        return -1;
    const char *end = p + length;
    out->minus = p < end && *p == '-';
    p += out->minus;
    Wide unscaled = 0;
    int digits = 0, any = 0, point = 0;
    int64_t fraction = 0, exponent = 0;
    for (; p < end; p++) {
        if (*p >= '0' && *p <= '9') {
            any = 1;
            fraction += point;
            if (digits > 0 || *p != '0') {
                if (++digits > MAX_DIGITS)
                    return 0;
                unscaled = unscaled * 10 + (Wide)(*p - '0');
            }
        } else if (*p == '.' && !point) {
            point = 1;
        } else {
            break;
        }
    }
    if (!any)
        return 0;
    if (p < end) {
        if (*p != 'E' && *p != 'e')
            return 0;
        p++;
        int exponent_negative = p < end && *p == '-';
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        int exponent_digits = 0;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
            if (++exponent_digits > 15)
                return 0;
            exponent = exponent * 10 + (*p - '0');
        }
        if (p != end || exponent_digits == 0)
            return 0;
        if (exponent_negative)
            exponent = -exponent;
    }
    out->unscaled = unscaled;
    out->scale = fraction - exponent;
    return 1;
}

static const double POWERS_OF_TEN[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
};

/* float(value) of an exact Decimal. Python's float(Decimal) is strtod(str(value)): correctly rounded.
   When the unscaled value is below 2^53 and the scale within +-22, both it and 10^|scale| are exact
   doubles, so one IEEE division or multiplication gives that same correctly rounded double. */
static PyObject *decimal_to_double(PyObject *value)
{
    PyObject *text = PyObject_Str(value);
    if (text == NULL)
        return NULL;
    DecimalText decimal;
    int parsed = parse_decimal(text, &decimal);
    Py_DECREF(text);
    if (parsed < 0)
        return NULL;
    if (parsed && decimal.unscaled <= ((Wide)1 << 53) && decimal.scale >= -22 && decimal.scale <= 22) {
        double number = (double)(uint64_t)decimal.unscaled;
        number = decimal.scale >= 0 ? number / POWERS_OF_TEN[decimal.scale] : number * POWERS_OF_TEN[-decimal.scale];
        return PyFloat_FromDouble(decimal.minus ? -number : number);
    }
    return PyNumber_Float(value);
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* An exact datetime whose UTC reading is its own fields: tzinfo None (conversions._utc reads it as
   UTC) or the datetime.timezone.utc singleton. Anything else is left to the Python conversion. */
static int is_utc_datetime(PyObject *value)
{
    if (!PyDateTime_CheckExact(value))
        return 0;
    PyObject *tz = PyDateTime_DATE_GET_TZINFO(value);
    return tz == Py_None || tz == PyDateTime_TimeZone_UTC;
}

static int64_t utc_micros(PyObject *value)
{
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                   PyDateTime_GET_DAY(value));
    int64_t seconds = PyDateTime_DATE_GET_HOUR(value) * 3600LL + PyDateTime_DATE_GET_MINUTE(value) * 60LL
                      + PyDateTime_DATE_GET_SECOND(value);
    return days * MICROS_PER_DAY + seconds * 1000000LL + PyDateTime_DATE_GET_MICROSECOND(value);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static PyObject *utc_date(PyObject *value, int first_of_month)
{
    return PyDate_FromDate(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                           first_of_month ? 1 : PyDateTime_GET_DAY(value));
}

/* An exact int (not a bool) that a signed integer of `size` bytes holds. */
static int exact_int_of_bytes(PyObject *value, int size)
{
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    long long high = size == 8 ? INT64_MAX : (1LL << (size * 8 - 1)) - 1;
    return !overflow && -high - 1 <= number && number <= high;
}

/* One value of a single-source column (not None, UNSET or UNAVAILABLE): new reference or NULL. */
static PyObject *convert_one(int kind, PyObject *convert, PyObject *value)
{
    switch (kind) {
    case K_TEXT:
        if (PyUnicode_CheckExact(value) && PyUnicode_IS_ASCII(value))
            return Py_NewRef(value);
        break;
    case K_SMALLINT:
    case K_INT:
    case K_BIGINT:
        if (exact_int_of_bytes(value, kind == K_BIGINT ? 8 : kind == K_INT ? 4 : 2))
            return Py_NewRef(value);
        break;
    case K_BOOLEAN:
        if (value == Py_True || value == Py_False)
            return Py_NewRef(value);
        break;
    case K_DECIMAL:
        if (Py_TYPE(value) == (PyTypeObject *)DecimalType) {
            PyObject *finite = PyObject_CallOneArg(IsFinite, value);
            if (finite == NULL)
                return NULL;
            Py_DECREF(finite);
            if (finite == Py_True)
                return Py_NewRef(value);
        }
        break;
    case K_DOUBLE:
        if (Py_TYPE(value) == (PyTypeObject *)DecimalType)
            return decimal_to_double(value);
        if (PyFloat_CheckExact(value))
            return Py_NewRef(value);
        break;
    case K_TIMESTAMP_MS:
        if (is_utc_datetime(value))
            return PyLong_FromLongLong(floor_div(utc_micros(value), 1000));
        break;
    case K_EPOCH_US:
        if (is_utc_datetime(value))
            return PyLong_FromLongLong(utc_micros(value));
        break;
    case K_DATE:
        if (PyDate_CheckExact(value))
            return Py_NewRef(value);
        if (is_utc_datetime(value))
            return utc_date(value, 0);
        break;
    case K_DAY:
        if (is_utc_datetime(value))
            return utc_date(value, 0);
        break;
    case K_MONTH:
        if (is_utc_datetime(value))
            return utc_date(value, 1);
        break;
    case K_BLOB:
        if (PyBytes_CheckExact(value))
            return Py_NewRef(value);
        break;
    }
    return PyObject_CallOneArg(convert, value);
}

/* A column read from several source columns, all present and none UNAVAILABLE. */
static PyObject *convert_many(int kind, PyObject *convert, PyObject **raw, Py_ssize_t count)
{
    if (kind == K_KLINE_BUCKET && count == 2 && PyUnicode_CheckExact(raw[1]) && is_utc_datetime(raw[0])) {
        int found = PySet_Contains(SubHour, raw[1]);
        if (found < 0)
            return NULL;
        if (found)
            return utc_date(raw[0], 0);
        found = PySet_Contains(HourOrLonger, raw[1]);
        if (found < 0)
            return NULL;
        if (found)
            return utc_date(raw[0], 1);
    }
    return PyObject_Vectorcall(convert, raw, count, NULL);
}

typedef struct {
    int kind;
    int null_check;     /* conversion.arity == 1: a None first source is a null (several-source path) */
    Py_ssize_t count;   /* source columns */
    PyObject *sources;  /* tuple of str */
    PyObject *convert;
} Column;

/* The objects a Converter is given (call-backs into the mapping package, the Write type, the writer), in the
   order Converter() takes them after plan and key_positions. */
enum { R_ON_ERROR, R_VALUE, R_BAD_KEY, R_PYTHON, R_WRITE_TYPE, R_WRITER, REF_COUNT };

/* The fields of mapping.Write, in order, that a Converter sets (and nothing else): check_write() compares them
   with the Python class when mapping is imported and whenever a Converter is made. */
#define WRITE_MEMBERS 5
static const char *const WRITE_MEMBER_NAMES[WRITE_MEMBERS] = {"target", "key", "values", "timestamp", "order"};

/* The names of a tuple of dataclasses.Field, or NULL with an exception set. */
static PyObject *field_names(PyObject *fields)
{
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    PyObject *names = PyTuple_New(count);
    for (Py_ssize_t i = 0; names != NULL && i < count; i++) {
        PyObject *name = PyObject_GetAttrString(PyTuple_GET_ITEM(fields, i), "name");
        if (name == NULL)
            Py_CLEAR(names);
        else
            PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

static PyObject *write_member_names(void)
{
    PyObject *names = PyTuple_New(WRITE_MEMBERS);
    for (int i = 0; names != NULL && i < WRITE_MEMBERS; i++) {
        PyObject *name = PyUnicode_FromString(WRITE_MEMBER_NAMES[i]);
        if (name == NULL)
            Py_CLEAR(names);
        else
            PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

/* 0 when `write_type` is a slots dataclass with exactly the fields WRITE_MEMBER_NAMES, in that order;
   otherwise -1 with a TypeError that names both field lists. */
static int write_type_check(PyObject *write_type)
{
    if (!PyType_Check(write_type)) {
        PyErr_Format(PyExc_TypeError, "the Write type of _cql_native must be a class, not %R", write_type);
        return -1;
    }
    PyObject *fields = PyObject_CallOneArg(DataclassFields, write_type);
    if (fields == NULL) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s is not a dataclass: _cql_native builds Write objects field by field",
                     ((PyTypeObject *)write_type)->tp_name);
        return -1;
    }
    PyObject *found = PyTuple_Check(fields) ? field_names(fields) : NULL;
    Py_DECREF(fields);
    PyObject *expected = found != NULL ? write_member_names() : NULL;
    int same = expected != NULL ? PyObject_RichCompareBool(found, expected, Py_EQ) : -1;
    if (same == 0)
        PyErr_Format(PyExc_TypeError,
                     "%s has the fields %R but _cql_native builds it with exactly %R: change WRITE_MEMBER_NAMES "
                     "in cdc_consumer/_cql_native.c to match and rebuild (make venv)",
                     ((PyTypeObject *)write_type)->tp_name, found, expected);
    else if (same < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "dataclasses.fields did not return a tuple");
    Py_XDECREF(found);
    Py_XDECREF(expected);
    for (int i = 0; same == 1 && i < WRITE_MEMBERS; i++) {  /* each a slot C can set through its descriptor */
        PyObject *member = PyObject_GetAttrString(write_type, WRITE_MEMBER_NAMES[i]);
        if (member == NULL || !Py_IS_TYPE(member, &PyMemberDescr_Type)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot (declare Write with @dataclass(slots=True))",
                         ((PyTypeObject *)write_type)->tp_name, WRITE_MEMBER_NAMES[i]);
            same = -1;
        }
        Py_XDECREF(member);
    }
    return same == 1 ? 0 : -1;
}

static PyObject *check_write(PyObject *Py_UNUSED(module), PyObject *write_type)
{
    if (write_type_check(write_type) < 0)
        return NULL;
    Py_RETURN_NONE;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t count;
    Column *columns;
    Py_ssize_t key_count;
    Py_ssize_t *key_positions;
    PyObject *refs[REF_COUNT];
    PyObject *write_members[WRITE_MEMBERS];  /* member descriptors of Write's slots */
} Converter;

static PyObject *Converter_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* A new GC object of `type` with its fields zeroed and not yet tracked: it is built, then tracked, so the
   collector never traverses a half-built one (as gc_object_new in _native_common.h). */
static PyObject *gc_object_new(PyTypeObject *type, size_t size)
{
    PyObject *self = (PyObject *)PyObject_GC_New(PyObject, type);
    if (self != NULL)
        memset((char *)self + sizeof(PyObject), 0, size - sizeof(PyObject));
    return self;
}

static PyObject *cleared_error(const char *type_name)
{
    PyErr_Format(PyExc_RuntimeError, "this %s was cleared by the garbage collector", type_name);
    return NULL;
}

static int Converter_traverse(Converter *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; self->columns != NULL && i < self->count; i++) {
        Py_VISIT(self->columns[i].convert);
        Py_VISIT(self->columns[i].sources);
    }
    for (int i = 0; i < REF_COUNT; i++)
        Py_VISIT(self->refs[i]);
    for (int i = 0; i < WRITE_MEMBERS; i++)
        Py_VISIT(self->write_members[i]);
    return 0;
}

/* writer, and the bound methods of it, hold this Converter: a cycle. */
static int Converter_clear(Converter *self)
{
    for (Py_ssize_t i = 0; self->columns != NULL && i < self->count; i++) {
        Py_CLEAR(self->columns[i].convert);
        Py_CLEAR(self->columns[i].sources);
    }
    for (int i = 0; i < REF_COUNT; i++)
        Py_CLEAR(self->refs[i]);
    for (int i = 0; i < WRITE_MEMBERS; i++)
        Py_CLEAR(self->write_members[i]);
    return 0;
}

static void Converter_dealloc(Converter *self)
{
    PyObject_GC_UnTrack(self);
    Converter_clear(self);
    PyMem_Free(self->columns);
    PyMem_Free(self->key_positions);
    PyObject_GC_Del(self);
}

static PyObject *Converter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *plan, *keys, *refs[REF_COUNT];
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "Converter takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!OOOOO!O:Converter", &PyTuple_Type, &plan, &PyTuple_Type, &keys, &refs[R_ON_ERROR],
                          &refs[R_VALUE], &refs[R_BAD_KEY], &refs[R_PYTHON], &PyType_Type, &refs[R_WRITE_TYPE],
                          &refs[R_WRITER]))
        return NULL;
    PyObject *write_type = refs[R_WRITE_TYPE];
    if (write_type_check(write_type) < 0)
        return NULL;
    Converter *self = (Converter *)gc_object_new(type, sizeof(Converter));
    if (self == NULL)
        return NULL;
    self->vectorcall = Converter_vectorcall;
    for (int i = 0; i < REF_COUNT; i++)
        self->refs[i] = Py_NewRef(refs[i]);
    for (int i = 0; i < WRITE_MEMBERS; i++) {
        PyObject *member = PyObject_GetAttrString(write_type, WRITE_MEMBER_NAMES[i]);
        self->write_members[i] = member;
        if (member == NULL)
            goto fail;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(plan);
    self->columns = PyMem_Calloc(count ? count : 1, sizeof(Column));
    self->key_positions = PyMem_Calloc(PyTuple_GET_SIZE(keys) ? PyTuple_GET_SIZE(keys) : 1, sizeof(Py_ssize_t));
    if (self->columns == NULL || self->key_positions == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++, self->count++) {
        Column *column = &self->columns[i];
        PyObject *sources, *convert;
        int arity;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(plan, i), "iO!Oi:plan entry", &column->kind, &PyTuple_Type,
                              &sources, &convert, &arity))
            goto fail;
        if (column->kind < 0 || column->kind >= K_COUNT) {
            PyErr_Format(PyExc_ValueError, "unknown conversion kind %d", column->kind);
            goto fail;
        }
        for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(sources); s++) {
            if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(sources, s))) {
                PyErr_SetString(PyExc_TypeError, "source column names must be str");
                goto fail;
            }
        }
        column->null_check = arity == 1;
        column->count = PyTuple_GET_SIZE(sources);
        column->sources = Py_NewRef(sources);
        column->convert = Py_NewRef(convert);
    }
    self->key_count = PyTuple_GET_SIZE(keys);
    for (Py_ssize_t k = 0; k < self->key_count; k++) {
        Py_ssize_t position = PyLong_AsSsize_t(PyTuple_GET_ITEM(keys, k));
        if (position == -1 && PyErr_Occurred())
            goto fail;
        if (position < 0 || position >= count) {
            PyErr_SetString(PyExc_IndexError, "key position out of range");
            goto fail;
        }
        self->key_positions[k] = position;
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* The value of column i (new reference), or NULL with the exception set. */
static PyObject *column_value(Converter *self, Py_ssize_t i, PyObject *row, PyObject *null)
{
    Column *column = &self->columns[i];
    if (column->count == 1) {
        PyObject *value = PyDict_GetItemWithError(row, PyTuple_GET_ITEM(column->sources, 0));
        if (value == NULL)
            return PyErr_Occurred() ? NULL : Py_NewRef(Unset);  /* a column the source table lacks */
        if (value == Py_None)
            return Py_NewRef(null);
        if (value == Unset || value == Unavailable)  /* unchanged TOAST value: keep the stored one */
            return Py_NewRef(Unset);
        return convert_one(column->kind, column->convert, value);
    }
    if (column->count == 0 || column->count > 8) {
        PyObject *index = PyLong_FromSsize_t(i);
        PyObject *result = index == NULL ? NULL
            : PyObject_CallFunctionObjArgs(self->refs[R_VALUE], index, row, null == Unset ? Py_True : Py_False, NULL);
        Py_XDECREF(index);
        return result;
    }
    PyObject *raw[8];
    for (Py_ssize_t s = 0; s < column->count; s++) {
        PyObject *value = PyDict_GetItemWithError(row, PyTuple_GET_ITEM(column->sources, s));
        if (value == NULL)
            return PyErr_Occurred() ? NULL : Py_NewRef(Unset);
        if (value == Unavailable)
            return Py_NewRef(Unset);
        raw[s] = value;
    }
    if (raw[0] == Py_None && column->null_check)
        return Py_NewRef(null == Unset ? Unset : Py_None);
    /* the borrowed values stay alive: the row holds them and the conversion cannot reach the row */
    for (Py_ssize_t s = 0; s < column->count; s++)
        Py_INCREF(raw[s]);
    PyObject *result = convert_many(column->kind, column->convert, raw, column->count);
    for (Py_ssize_t s = 0; s < column->count; s++)
        Py_DECREF(raw[s]);
    return result;
}

/* A ConversionError of column i: on_error raises the UnmappableRecord (NULL returned either way). */
static void conversion_failed(Converter *self, Py_ssize_t i)
{
    if (!PyErr_ExceptionMatches(ConversionError))
        return;
    PyObject *type, *exc, *traceback;
    PyErr_Fetch(&type, &exc, &traceback);
    PyErr_NormalizeException(&type, &exc, &traceback);
    if (traceback != NULL)
        PyException_SetTraceback(exc, traceback);
    PyObject *index = PyLong_FromSsize_t(i);
    PyObject *result = index == NULL ? NULL : PyObject_CallFunctionObjArgs(self->refs[R_ON_ERROR], index, exc, NULL);
    if (result != NULL) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_RuntimeError, "on_error returned instead of raising");
    }
    Py_XDECREF(index);
    Py_XDECREF(type);
    Py_XDECREF(exc);
    Py_XDECREF(traceback);
}

static PyObject *Converter_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Converter *self = (Converter *)callable;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Converter() takes the row, the null value, timestamp and order");
        return NULL;
    }
    if (self->refs[R_WRITER] == NULL)
        return cleared_error("Converter");
    if (!PyDict_CheckExact(args[0]))
        return PyObject_Vectorcall(self->refs[R_PYTHON], args, 4, NULL);
    PyObject *row = args[0], *null = args[1];
    PyObject *values = PyList_New(self->count);
    if (values == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        PyObject *value = column_value(self, i, row, null);
        if (value == NULL) {
            conversion_failed(self, i);
            Py_DECREF(values);
            return NULL;
        }
        PyList_SET_ITEM(values, i, value);
    }
    PyObject *key = PyTuple_New(self->key_count);
    if (key == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < self->key_count; k++) {
        PyObject *value = PyList_GET_ITEM(values, self->key_positions[k]);
        if (value == Py_None || value == Unset) {  /* bad_key raises the Python loop's UnmappableRecord */
            PyObject *result = PyObject_CallOneArg(self->refs[R_BAD_KEY], values);
            if (result != NULL) {
                Py_DECREF(result);
                PyErr_SetString(PyExc_RuntimeError, "bad_key returned instead of raising");
            }
            Py_DECREF(key);
            Py_DECREF(values);
            return NULL;
        }
        PyTuple_SET_ITEM(key, k, Py_NewRef(value));
    }
    PyObject *slots[WRITE_MEMBERS] = {self->refs[R_WRITER], key, values, args[2], args[3]};
    PyTypeObject *write_type = (PyTypeObject *)self->refs[R_WRITE_TYPE];
    PyObject *write = write_type->tp_alloc(write_type, 0);
    for (int i = 0; write != NULL && i < WRITE_MEMBERS; i++) {
        PyObject *member = self->write_members[i];
        if (Py_TYPE(member)->tp_descr_set(member, write, slots[i]) < 0)
            Py_CLEAR(write);
    }
    Py_DECREF(values);
    Py_DECREF(key);
    return write;
}

static PyTypeObject ConverterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc_consumer._cql_native.Converter",
    .tp_basicsize = sizeof(Converter),
    .tp_vectorcall_offset = offsetof(Converter, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Converter_traverse,
    .tp_clear = (inquiry)Converter_clear,
    .tp_doc = "Converter(plan, key_positions, on_error, value, bad_key, python, Write, writer):\n"
              "(row, null, timestamp, order) -> Write.\n\n"
              "plan: ((kind, sources, convert, arity), ...); see the comment atop _cql_native.c.",
    .tp_new = Converter_new,
    .tp_dealloc = (destructor)Converter_dealloc,
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------------------ serializers */

typedef enum {
    S_CALL, S_DOUBLE, S_FLOAT, S_BIGINT, S_INT, S_SMALLINT, S_TINYINT, S_BOOLEAN, S_TEXT, S_DECIMAL,
    S_DATE, S_BLOB, S_COUNT
} SerializerKind;

/* CQL type names -> kind (the types cql_values._FAST serializes; not ascii, whose driver serializer
   refuses non-ASCII text). */
static const struct { const char *name; SerializerKind kind; } SERIALIZER_NAMES[] = {
    {"double", S_DOUBLE}, {"float", S_FLOAT}, {"bigint", S_BIGINT}, {"counter", S_BIGINT},
    {"timestamp", S_BIGINT}, {"int", S_INT}, {"smallint", S_SMALLINT}, {"tinyint", S_TINYINT},
    {"boolean", S_BOOLEAN}, {"text", S_TEXT}, {"varchar", S_TEXT},
    {"decimal", S_DECIMAL}, {"date", S_DATE}, {"blob", S_BLOB},
};

static PyObject *big_endian(uint64_t number, int size)
{
    unsigned char buffer[8];
    for (int i = size - 1; i >= 0; i--, number >>= 8)
        buffer[i] = (unsigned char)(number & 0xff);
    return PyBytes_FromStringAndSize((const char *)buffer, size);
}

/* CQL decimal of an exact Decimal, or NULL without an exception for the Python serializer to do
   (NaN, Infinity, more than MAX_DIGITS significant digits, a scale outside int32). */
static PyObject *serialize_decimal(PyObject *value)
{
    PyObject *text = PyObject_Str(value);
    if (text == NULL)
        return NULL;
    DecimalText decimal;
    int parsed = parse_decimal(text, &decimal);
    Py_DECREF(text);
    if (parsed <= 0 || decimal.scale < INT32_MIN || decimal.scale > INT32_MAX)
        return NULL;
    int negative = decimal.minus && decimal.unscaled != 0;  /* -0 and -0E-8: unscaled 0, as int("-0") is */
    Wide number = negative ? (Wide)0 - decimal.unscaled : decimal.unscaled;  /* two's complement */
    Wide magnitude = negative ? decimal.unscaled - 1 : decimal.unscaled;    /* ~number */
    int bits = 0;
    while (magnitude != 0) {
        magnitude >>= 1;
        bits++;
    }
    int size = bits / 8 + 1;
    unsigned char buffer[4 + sizeof(Wide) + 1];
    uint32_t scale_bits = (uint32_t)(int32_t)decimal.scale;
    buffer[0] = (unsigned char)(scale_bits >> 24);
    buffer[1] = (unsigned char)(scale_bits >> 16);
    buffer[2] = (unsigned char)(scale_bits >> 8);
    buffer[3] = (unsigned char)scale_bits;
    for (int i = size - 1; i >= 0; i--, number >>= 8)
        buffer[4 + i] = (unsigned char)(number & 0xff);
    return PyBytes_FromStringAndSize((const char *)buffer, 4 + size);
}

/* The bytes of one value (not None or UNSET), or NULL without an exception for the Python serializer. */
static PyObject *serialize_native(int kind, PyObject *value)
{
    switch (kind) {
    case S_DOUBLE:
        if (PyFloat_CheckExact(value)) {
            unsigned char buffer[8];
            if (PyFloat_Pack8(PyFloat_AS_DOUBLE(value), (char *)buffer, 0) < 0)
                break;
            return PyBytes_FromStringAndSize((const char *)buffer, 8);
        }
        return NULL;
    case S_FLOAT:
        if (PyFloat_CheckExact(value)) {
            unsigned char buffer[4];
            if (PyFloat_Pack4(PyFloat_AS_DOUBLE(value), (char *)buffer, 0) < 0)
                break;
            return PyBytes_FromStringAndSize((const char *)buffer, 4);
        }
        return NULL;
    case S_BIGINT:
    case S_INT:
    case S_SMALLINT:
    case S_TINYINT: {
        int size = kind == S_BIGINT ? 8 : kind == S_INT ? 4 : kind == S_SMALLINT ? 2 : 1;
        if (exact_int_of_bytes(value, size))
            return big_endian((uint64_t)PyLong_AsLongLong(value), size);
        return NULL;
    }
    case S_BOOLEAN:
        if (PyBool_Check(value))
            return PyBytes_FromStringAndSize(value == Py_True ? "\x01" : "\x00", 1);
        return NULL;
    case S_TEXT:
        if (PyUnicode_CheckExact(value)) {
            if (PyUnicode_IS_ASCII(value))
                return PyBytes_FromStringAndSize(PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value));
            PyObject *encoded = PyUnicode_AsUTF8String(value);
            if (encoded == NULL)
                break;
            return encoded;
        }
        return NULL;
    case S_DECIMAL:
        if (Py_TYPE(value) == (PyTypeObject *)DecimalType) {
            PyObject *bytes = serialize_decimal(value);
            if (bytes == NULL && PyErr_Occurred())
                break;
            return bytes;
        }
        return NULL;
    case S_DATE:
        if (PyDate_CheckExact(value)) {
            int64_t days = days_from_civil(PyDateTime_GET_YEAR(value), PyDateTime_GET_MONTH(value),
                                           PyDateTime_GET_DAY(value));
            return big_endian((uint64_t)(days + (1LL << 31)), 4);
        }
        return NULL;
    case S_BLOB:
        if (PyBytes_CheckExact(value))
            return Py_NewRef(value);
        if (PyByteArray_CheckExact(value))
            return PyBytes_FromStringAndSize(PyByteArray_AsString(value), PyByteArray_Size(value));
        return NULL;
    }
    /* a native attempt failed with an exception: the Python serializer gives the exact outcome */
    PyErr_Clear();
    return NULL;
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t count;
    int *kinds;
    PyObject *fallbacks;  /* tuple: each column's Python serializer */
} Serializer;

static PyObject *Serializer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static int Serializer_traverse(Serializer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallbacks);
    return 0;
}

/* The fallbacks are the driver's serializers or methods of the binder that holds this: a cycle. */
static int Serializer_clear(Serializer *self)
{
    Py_CLEAR(self->fallbacks);
    return 0;
}

static void Serializer_dealloc(Serializer *self)
{
    PyObject_GC_UnTrack(self);
    Serializer_clear(self);
    PyMem_Free(self->kinds);
    PyObject_GC_Del(self);
}

static PyObject *Serializer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *kinds, *fallbacks;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "Serializer takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!:Serializer", &PyTuple_Type, &kinds, &PyTuple_Type, &fallbacks))
        return NULL;
    if (PyTuple_GET_SIZE(kinds) != PyTuple_GET_SIZE(fallbacks)) {
        PyErr_SetString(PyExc_ValueError, "one kind and one fallback serializer per column");
        return NULL;
    }
    Serializer *self = (Serializer *)gc_object_new(type, sizeof(Serializer));
    if (self == NULL)
        return NULL;
    self->vectorcall = Serializer_vectorcall;
    self->fallbacks = Py_NewRef(fallbacks);
    self->count = PyTuple_GET_SIZE(kinds);
    self->kinds = PyMem_Calloc(self->count ? self->count : 1, sizeof(int));
    if (self->kinds == NULL) {
        PyErr_NoMemory();
        Py_DECREF(self);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->count; i++) {
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
        if (kind == -1 && PyErr_Occurred()) {
            Py_DECREF(self);
            return NULL;
        }
        if (kind < 0 || kind >= S_COUNT) {
            PyErr_Format(PyExc_ValueError, "unknown serializer kind %ld", kind);
            Py_DECREF(self);
            return NULL;
        }
        self->kinds[i] = (int)kind;
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *Serializer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Serializer *self = (Serializer *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Serializer() takes the values only");
        return NULL;
    }
    if (self->fallbacks == NULL)
        return cleared_error("Serializer");
    PyObject *values = PySequence_Fast(args[0], "values must be a sequence");
    if (values == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(values);
    if (count != self->count) {
        PyErr_Format(PyExc_ValueError, "%zd values for %zd bind markers", count, self->count);
        Py_DECREF(values);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(values);
    PyObject *result = PyList_New(count);
    for (Py_ssize_t i = 0; result != NULL && i < count; i++) {
        PyObject *value = items[i], *bytes;
        if (value == Py_None || value == Unset) {
            bytes = Py_NewRef(value);
        } else {
            bytes = serialize_native(self->kinds[i], value);
            if (bytes == NULL)
                bytes = PyObject_CallOneArg(PyTuple_GET_ITEM(self->fallbacks, i), value);
        }
        if (bytes == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, bytes);
    }
    Py_DECREF(values);
    return result;
}

static PyTypeObject SerializerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc_consumer._cql_native.Serializer",
    .tp_basicsize = sizeof(Serializer),
    .tp_vectorcall_offset = offsetof(Serializer, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Serializer_traverse,
    .tp_clear = (inquiry)Serializer_clear,
    .tp_doc = "Serializer(kinds, fallbacks): (values) -> serialized values; see the comment atop _cql_native.c.",
    .tp_new = Serializer_new,
    .tp_dealloc = (destructor)Serializer_dealloc,
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------------------------ module */

static PyMethodDef module_functions[] = {
    {"check_write", check_write, METH_O,
     "check_write(Write): None when the class has exactly the fields WRITE_FIELDS, in order, each a slot;\n"
     "TypeError naming both field lists otherwise (mapping calls it on import)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc_consumer._cql_native",
    .m_methods = module_functions,
    .m_doc = "Row conversion and statement binding of the consumer (see the comment atop _cql_native.c).",
    .m_size = -1,
};

static PyObject *attribute_of(const char *module_name, const char *name)
{
    PyObject *imported = PyImport_ImportModule(module_name);
    if (imported == NULL)
        return NULL;
    PyObject *attribute = PyObject_GetAttrString(imported, name);
    Py_DECREF(imported);
    return attribute;
}

/* {name: kind} dicts for the mapping package and cql_values.py to build plans with. */
static PyObject *conversion_kinds(void)
{
    PyObject *kinds = PyDict_New();
    for (int kind = 1; kinds != NULL && kind < K_COUNT; kind++) {
        PyObject *number = PyLong_FromLong(kind);
        if (number == NULL || PyDict_SetItemString(kinds, CONVERSION_NAMES[kind], number) < 0)
            Py_CLEAR(kinds);
        Py_XDECREF(number);
    }
    return kinds;
}

static PyObject *serializer_kinds(void)
{
    PyObject *kinds = PyDict_New();
    for (size_t i = 0; kinds != NULL && i < sizeof(SERIALIZER_NAMES) / sizeof(SERIALIZER_NAMES[0]); i++) {
        PyObject *number = PyLong_FromLong(SERIALIZER_NAMES[i].kind);
        if (number == NULL || PyDict_SetItemString(kinds, SERIALIZER_NAMES[i].name, number) < 0)
            Py_CLEAR(kinds);
        Py_XDECREF(number);
    }
    return kinds;
}

PyMODINIT_FUNC PyInit__cql_native(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    if (PyType_Ready(&ConverterType) < 0 || PyType_Ready(&SerializerType) < 0)
        return NULL;
    DecimalType = attribute_of("decimal", "Decimal");
    IsFinite = DecimalType ? PyObject_GetAttrString(DecimalType, "is_finite") : NULL;
    Unset = attribute_of("cassandra.query", "UNSET_VALUE");
    Unavailable = attribute_of("cdc_consumer.events", "UNAVAILABLE");
    ConversionError = attribute_of("cdc_consumer.conversions", "ConversionError");
    SubHour = attribute_of("cdc_consumer.conversions", "SUB_HOUR_INTERVALS");
    HourOrLonger = attribute_of("cdc_consumer.conversions", "HOUR_OR_LONGER_INTERVALS");
    DataclassFields = attribute_of("dataclasses", "fields");
    if (!IsFinite || !Unset || !Unavailable || !ConversionError || !SubHour || !HourOrLonger || !DataclassFields)
        return NULL;
    if (!PyAnySet_Check(SubHour) || !PyAnySet_Check(HourOrLonger)) {
        PyErr_SetString(PyExc_TypeError, "kline intervals must be sets");
        return NULL;
    }
    PyObject *conversions = conversion_kinds(), *serializers = serializer_kinds(), *write_fields = write_member_names();
    PyObject *m = conversions && serializers && write_fields ? PyModule_Create(&module) : NULL;
    if (m == NULL || PyModule_AddObjectRef(m, "Converter", (PyObject *)&ConverterType) < 0
        || PyModule_AddObjectRef(m, "WRITE_FIELDS", write_fields) < 0
        || PyModule_AddObjectRef(m, "Serializer", (PyObject *)&SerializerType) < 0
        || PyModule_AddObjectRef(m, "CONVERSION_KINDS", conversions) < 0
        || PyModule_AddObjectRef(m, "SERIALIZER_KINDS", serializers) < 0) {
        Py_XDECREF(m);
        m = NULL;
    }
    Py_XDECREF(conversions);
    Py_XDECREF(serializers);
    Py_XDECREF(write_fields);
    return m;
}
