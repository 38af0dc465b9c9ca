/* _native_common.h: what the C extensions _avro_native and _json_native share (included by both).

   The Connect values both wire formats build natively — Decimal from its unscaled digits (exact, no
   context rounding), UTC datetimes from epoch counts, dates from day counts, ZonedTimestamp text — and the
   construction of events.ChangeEvent / events.Source straight into their slots (see avro.py and
   decoder.py for the checks that the dataclasses still have exactly these fields).

   Every function here returns a new reference or NULL with an exception set; a value a conversion
   refuses raises ValueError, and the caller lets its Python path name the problem exactly. */

#ifndef CDC_NATIVE_COMMON_H
#define CDC_NATIVE_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define MICROS_PER_DAY 86400000000LL
#define MIN_MICROS (-62135596800000000LL)  /* 0001-01-01T00:00:00Z: datetime's first instant */
#define MAX_MICROS 253402300799999999LL    /* 9999-12-31T23:59:59.999999Z: its last */
#define MIN_DAYS (-719162LL)               /* 0001-01-01 in days since 1970-01-01 */
#define MAX_DAYS 2932896LL                 /* 9999-12-31 */

static PyObject *DecimalType;
static PyObject *FromIsoFormat;  /* datetime.fromisoformat */
static PyObject *IntFromBytes;   /* int.from_bytes, and its arguments "big" and the keyword name "signed" */
static PyObject *BigEndian, *SignedKeyword;

typedef enum {
    C_NONE, C_DECIMAL, C_TIMESTAMP_MS, C_TIMESTAMP_US, C_TIMESTAMP_NS, C_DATE, C_ZONED_TIMESTAMP
} Conversion;

/* A Connect Decimal's schema parameters: digits allowed, and the exponent appended to the unscaled digits. */
typedef struct {
    bool has_precision;    /* whether the schema limits its digits */
    long long precision;   /* most digits allowed */
    Py_ssize_t most_bytes; /* most bytes of the minimal unscaled integer: `precision`'s cheap bound */
    char exponent[24];     /* "E<-scale>" */
} DecimalSpec;

/* The limits of a PostgreSQL numeric (debezium.py: DECIMAL_SCALES, DECIMAL_PRECISIONS, MAX_NUMERIC_DIGITS):
   numeric(p, s) has 1 <= p <= 1000 and -1000 <= s <= 1000; an unconstrained one at most 131072 + 16383 digits. */
#define MAX_DECIMAL_SCALE 1000
#define MAX_DECIMAL_PRECISION 1000
#define MAX_NUMERIC_DIGITS (131072 + 16383)

/* Most bytes of the minimal two's complement of an integer with `digits` decimal digits (debezium.py's
   unscaled_bits_bound, plus the sign bit): checked before any digit is computed. */
static Py_ssize_t unscaled_bytes_bound(long long digits)
{
    return (Py_ssize_t)(((digits * 3322 + 999) / 1000 + 1 + 7) / 8);
}

static PyObject *value_error(const char *reason);

/* The spec of (scale, precision or None); a scale or precision no PostgreSQL numeric has is refused
   (ValueError: the schema is then decoded on the Python path, which names it InvalidValue). */
static int decimal_spec_build(DecimalSpec *spec, PyObject *scale_object, PyObject *precision)
{
    long long scale = PyLong_AsLongLong(scale_object);
    spec->has_precision = precision != Py_None;
    spec->precision = spec->has_precision ? PyLong_AsLongLong(precision) : 0;
    if (PyErr_Occurred())
        return -1;
    if (scale < -MAX_DECIMAL_SCALE || scale > MAX_DECIMAL_SCALE) {
        PyErr_SetString(PyExc_ValueError, "a decimal scale outside PostgreSQL's -1000..1000");
        return -1;
    }
    if (spec->has_precision && (spec->precision < 1 || spec->precision > MAX_DECIMAL_PRECISION)) {
        PyErr_SetString(PyExc_ValueError, "a decimal precision outside PostgreSQL's 1..1000");
        return -1;
    }
    /* as loose as debezium.py's first bound: the digit count then decides */
    spec->most_bytes = unscaled_bytes_bound(spec->has_precision ? 2 * spec->precision + 100 : MAX_NUMERIC_DIGITS);
    snprintf(spec->exponent, sizeof(spec->exponent), "E%lld", -scale);
    return 0;
}

static PyObject *value_error(const char *reason)
{
    PyErr_SetString(PyExc_ValueError, reason);
    return NULL;
}

/* Zeroed memory for `count` items (at least one), or NULL with MemoryError set. */
static void *allocate(Py_ssize_t count, size_t size)
{
    void *memory = PyMem_Calloc(count > 0 ? (size_t)count : 1, size);
    if (memory == NULL)
        PyErr_NoMemory();
    return memory;
}

/* ------------------------------------------------------------------ garbage collection */

/* Every type here holds Python objects (converters, schemas' types, callables of decoder.py) that may
   refer back to it, so each is GC-tracked. An instance is made untracked with its fields zeroed, built,
   and only then tracked (gc_object_ready): the collector never traverses a half-built one. */
static PyObject *gc_object_new(PyTypeObject *type, size_t size)
{
    PyObject *self = (PyObject *)PyObject_GC_New(PyObject, type);
    if (self != NULL)
        memset((char *)self + sizeof(PyObject), 0, size - sizeof(PyObject));
    return self;
}

static PyObject *gc_object_ready(PyObject *self)
{
    PyObject_GC_Track(self);
    return self;
}

/* After tp_clear broke a cycle, the object may still be reached (by another object's finaliser, say):
   it then refuses to work instead of dereferencing what it no longer holds. */
static PyObject *cleared_error(const char *type_name)
{
    PyErr_Format(PyExc_RuntimeError, "this %s was cleared by the garbage collector", type_name);
    return NULL;
}

/* Program descriptions are nested tuples. The tag of a ("tag", ...) tuple; NULL for anything else. */
static const char *tag_of(PyObject *description)
{
    if (!PyTuple_Check(description) || PyTuple_GET_SIZE(description) < 1
        || !PyUnicode_Check(PyTuple_GET_ITEM(description, 0)))
        return NULL;
    return PyUnicode_AsUTF8(PyTuple_GET_ITEM(description, 0));
}

/* ------------------------------------------------------------------- Connect conversions */

/* Decimal from the unscaled integer's decimal digits: exact at any precision (no context rounding). */
static PyObject *decimal_from_digits(const DecimalSpec *spec, const char *digits, Py_ssize_t length)
{
    Py_ssize_t magnitude_digits = length - (digits[0] == '-');
    if (spec->has_precision && magnitude_digits > spec->precision)
        return value_error("more digits than the decimal's precision");
    Py_ssize_t exponent_length = (Py_ssize_t)strlen(spec->exponent);
    char stack_buffer[80];
    char *text = length + exponent_length <= (Py_ssize_t)sizeof(stack_buffer)
                     ? stack_buffer : PyMem_Malloc(length + exponent_length);
    if (text == NULL)
        return PyErr_NoMemory();
    memcpy(text, digits, length);
    memcpy(text + length, spec->exponent, exponent_length);
    PyObject *string = PyUnicode_FromStringAndSize(text, length + exponent_length);
    if (text != stack_buffer)
        PyMem_Free(text);
    if (string == NULL)
        return NULL;
    PyObject *decimal = PyObject_CallOneArg(DecimalType, string);
    Py_DECREF(string);
    return decimal;
}

/* Decimal digits of a magnitude, written backwards from `end`; returns where they start. */
static char *digits_of(uint64_t magnitude, char *end)
{
    do {
        *--end = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    return end;
}

/* More bytes than a machine integer holds: Python's int does the arithmetic (rare: > 38 digits), built
   through the public call API as int.from_bytes(bytes, "big", signed=True). */
static PyObject *decimal_from_long_bytes(const DecimalSpec *spec, const uint8_t *bytes, Py_ssize_t size)
{
    PyObject *raw = PyBytes_FromStringAndSize((const char *)bytes, size);
    if (raw == NULL)
        return NULL;
    PyObject *arguments[] = {raw, BigEndian, Py_True};
    PyObject *number = PyObject_Vectorcall(IntFromBytes, arguments, 2, SignedKeyword);
    Py_DECREF(raw);
    if (number == NULL)
        return NULL;
    PyObject *text = PyObject_Str(number);
    Py_DECREF(number);
    if (text == NULL)
        return NULL;
    Py_ssize_t length;
    const char *digits = PyUnicode_AsUTF8AndSize(text, &length);
    PyObject *decimal = digits == NULL ? NULL : decimal_from_digits(spec, digits, length);
    Py_DECREF(text);
    return decimal;
}

/* Connect's Decimal: big-endian two's-complement unscaled integer, scale from the schema. */
static PyObject *decimal_from_twos_complement(const DecimalSpec *spec, const uint8_t *bytes, Py_ssize_t size)
{
    if (size == 0)
        return value_error("empty decimal bytes");
    while (size > 1 && ((bytes[0] == 0x00 && !(bytes[1] & 0x80)) || (bytes[0] == 0xff && (bytes[1] & 0x80)))) {
        bytes++;  /* a redundant sign byte: the same number one byte shorter */
        size--;
    }
    if (size > spec->most_bytes)
        return value_error("more bytes than the decimal's precision allows");
    char buffer[48];
    char *end = buffer + sizeof(buffer), *start;
    bool negative = bytes[0] & 0x80;
#ifdef __SIZEOF_INT128__
    if (size > 16)
        return decimal_from_long_bytes(spec, bytes, size);
    unsigned __int128 value = negative ? ~(unsigned __int128)0 : 0;  /* sign extension */
    for (Py_ssize_t i = 0; i < size; i++)
        value = (value << 8) | bytes[i];
    unsigned __int128 magnitude = negative ? ~value + 1 : value;
    if (magnitude >> 64 == 0) {
        start = digits_of((uint64_t)magnitude, end);
    } else {
        start = end;
        do {
            *--start = (char)('0' + (int)(magnitude % 10));
            magnitude /= 10;
        } while (magnitude != 0);
    }
#else
    if (size > 8)
        return decimal_from_long_bytes(spec, bytes, size);
    uint64_t value = negative ? ~(uint64_t)0 : 0;
    for (Py_ssize_t i = 0; i < size; i++)
        value = (value << 8) | bytes[i];
    start = digits_of(negative ? ~value + 1 : value, end);
#endif
    if (negative)
        *--start = '-';
    return decimal_from_digits(spec, start, end - start);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t quotient = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? quotient - 1 : quotient;
}

/* Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's civil_from_days). */
static void civil_from_days(int64_t days, int *year, int *month, int *day)
{
    days += 719468;
    int64_t era = floor_div(days, 146097);
    unsigned day_of_era = (unsigned)(days - era * 146097);
    unsigned year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    unsigned day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    unsigned shifted_month = (5 * day_of_year + 2) / 153;
    *day = (int)(day_of_year - (153 * shifted_month + 2) / 5 + 1);
    *month = (int)(shifted_month < 10 ? shifted_month + 3 : shifted_month - 9);
    *year = (int)((int64_t)year_of_era + era * 400 + (*month <= 2));
}

static PyObject *utc_datetime(int64_t micros)
{
    if (micros < MIN_MICROS || micros > MAX_MICROS)
        return value_error("timestamp outside datetime's years 1..9999");
    int64_t days = floor_div(micros, MICROS_PER_DAY);
    int64_t of_day = micros - days * MICROS_PER_DAY;
    int year, month, day;
    civil_from_days(days, &year, &month, &day);
    int64_t seconds = of_day / 1000000;
    return PyDateTimeAPI->DateTime_FromDateAndTime(
        year, month, day, (int)(seconds / 3600), (int)(seconds / 60 % 60), (int)(seconds % 60),
        (int)(of_day % 1000000), PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
}

static PyObject *timestamp_value(Conversion unit, int64_t value)
{
    if (unit == C_TIMESTAMP_US)
        return utc_datetime(value);
    if (unit == C_TIMESTAMP_MS) {
        if (value < MIN_MICROS / 1000 - 1 || value > MAX_MICROS / 1000 + 1)
            return value_error("timestamp outside datetime's years 1..9999");
        return utc_datetime(value * 1000);
    }
    if (value % 1000 != 0)
        return value_error("nanoseconds that datetime cannot hold");
    return utc_datetime(value / 1000);
}

static PyObject *date_value(int64_t days)
{
    if (days < MIN_DAYS || days > MAX_DAYS)
        return value_error("date outside years 1..9999");
    int year, month, day;
    civil_from_days(days, &year, &month, &day);
    return PyDateTimeAPI->Date_FromDate(year, month, day, PyDateTimeAPI->DateType);
}

/* ZonedTimestamp text: datetime.fromisoformat, kept when it is already UTC (Debezium's "Z"); any other
   offset (or none) goes to `convert`, the Python converter, which normalises or rejects it. */
static PyObject *zoned_timestamp(PyObject *convert, PyObject *text)
{
    PyObject *moment = PyObject_CallOneArg(FromIsoFormat, text);
    if (moment != NULL && PyDateTime_DATE_GET_TZINFO(moment) != PyDateTime_TimeZone_UTC) {
        Py_DECREF(moment);
        moment = PyObject_CallOneArg(convert, text);
    }
    return moment;
}

/* ------------------------------------------------------------ change events from envelopes */

/* The envelope and source fields EnvelopeCodec.event and source_from (debezium.py) use, by slot. */
enum { E_OP, E_BEFORE, E_AFTER, E_SOURCE, E_TRANSACTION, E_TS_US, E_TS_MS, ENVELOPE_SLOTS };
static const char *const ENVELOPE_FIELDS[] = {"op", "before", "after", "source", "transaction", "ts_us", "ts_ms"};
enum { S_TS_US, S_TS_MS, S_LSN, S_TX_ID, S_SNAPSHOT, S_DB, S_SCHEMA, S_TABLE, S_SEQUENCE, SOURCE_SLOTS };
static const char *const SOURCE_FIELDS[] = {"ts_us", "ts_ms", "lsn", "txId", "snapshot", "db", "schema", "table",
                                            "sequence"};
/* Every field of events.ChangeEvent and events.Source (slots dataclasses), set in this order. */
enum { EVENT_ATTRIBUTE_COUNT = 14, SOURCE_ATTRIBUTE_COUNT = 8 };
static const char *const EVENT_ATTRIBUTES[] = {"topic", "partition", "offset", "op", "key", "before", "after",
                                               "source", "headers", "tombstone", "transaction", "tx_block",
                                               "typed", "ts_us"};
static const char *const SOURCE_ATTRIBUTES[] = {"ts_us", "lsn", "tx_id", "snapshot", "db", "schema", "table",
                                                "sequence"};

typedef struct {
    PyTypeObject *event_type, *source_type;
    PyObject *ops, *snapshots;  /* wire value -> Op / Snapshot member */
    PyObject *event_members[EVENT_ATTRIBUTE_COUNT], *source_members[SOURCE_ATTRIBUTE_COUNT];
} EventShape;

static PyObject *slot_value(PyObject *value)
{
    return Py_NewRef(value != NULL ? value : Py_None);
}

/* Whether a plain field holds None (or is missing), or an exact int within int64; -1 with an error set. */
static int is_optional_int64(PyObject *value)
{
    if (value == NULL || value == Py_None)
        return 1;
    if (!PyLong_CheckExact(value))
        return 0;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred())
        return -1;
    return !overflow;
}

/* _ts_us: ts_us, else ts_ms in microseconds (Debezium before 2.6), else None; each an int64 (anything else
   is a ValueError here, and the Python path names it InvalidValue: never repeat a str). */
static PyObject *micros_of(PyObject *ts_us, PyObject *ts_ms)
{
    if ((ts_us == NULL || ts_us == Py_None) && ts_ms != NULL && ts_ms != Py_None) {
        int checked = is_optional_int64(ts_ms);
        if (checked <= 0)
            return checked < 0 ? NULL : value_error("ts_ms is not an int64");
        PyObject *thousand = PyLong_FromLong(1000);
        PyObject *micros = thousand == NULL ? NULL : PyNumber_Multiply(ts_ms, thousand);
        Py_XDECREF(thousand);
        return micros;
    }
    int checked = is_optional_int64(ts_us);
    if (checked <= 0)
        return checked < 0 ? NULL : value_error("ts_us is not an int64");
    return slot_value(ts_us);
}

/* _enum_value: the member for a wire value; an unknown one is left to the Python path to name. */
static PyObject *member_of(PyObject *members, PyObject *wire, const char *what)
{
    PyObject *member = PyDict_GetItemWithError(members, wire);
    if (member == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ValueError, "unknown %s", what);
    return Py_XNewRef(member);
}

/* A slots dataclass instance with its fields set as its generated __init__ would (it uses
   object.__setattr__ too), without running that Python-level __init__. Steals the values. */
static PyObject *dataclass_instance(PyTypeObject *type, PyObject *const *members, PyObject **values, int count)
{
    PyObject *instance = type->tp_alloc(type, 0);
    for (int i = 0; i < count; i++) {
        if (instance != NULL && values[i] != NULL
            && Py_TYPE(members[i])->tp_descr_set(members[i], instance, values[i]) < 0)
            Py_CLEAR(instance);
        Py_XDECREF(values[i]);
    }
    return instance;
}

/* source_from's checks of the plain source fields: int64 positions, str names (or None). */
static int source_fields_valid(PyObject **slots)
{
    static const int integers[] = {S_LSN, S_TX_ID}, texts[] = {S_DB, S_SCHEMA, S_TABLE, S_SEQUENCE};
    for (size_t i = 0; i < sizeof(integers) / sizeof(integers[0]); i++) {
        int checked = is_optional_int64(slots[integers[i]]);
        if (checked < 0)
            return -1;
        if (checked == 0) {
            value_error("a source position is not an int64");
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        PyObject *value = slots[texts[i]];
        if (value != NULL && value != Py_None && !PyUnicode_CheckExact(value)) {
            value_error("a source name is not a string");
            return -1;
        }
    }
    return 0;
}

static PyObject *source_instance(const EventShape *shape, PyObject **slots)
{
    if (source_fields_valid(slots) < 0)
        return NULL;
    PyObject *snapshot = slots[S_SNAPSHOT] == NULL || slots[S_SNAPSHOT] == Py_None
                             ? Py_NewRef(Py_None) : member_of(shape->snapshots, slots[S_SNAPSHOT], "snapshot");
    if (snapshot == NULL)
        return NULL;
    PyObject *values[SOURCE_ATTRIBUTE_COUNT] = {
        micros_of(slots[S_TS_US], slots[S_TS_MS]), slot_value(slots[S_LSN]), slot_value(slots[S_TX_ID]), snapshot,
        slot_value(slots[S_DB]), slot_value(slots[S_SCHEMA]), slot_value(slots[S_TABLE]),
        slot_value(slots[S_SEQUENCE])};
    if (values[0] == NULL) {
        for (int i = 1; i < SOURCE_ATTRIBUTE_COUNT; i++)
            Py_DECREF(values[i]);
        return NULL;
    }
    return dataclass_instance(shape->source_type, shape->source_members, values, SOURCE_ATTRIBUTE_COUNT);
}

static void shape_free(EventShape *shape)
{
    if (shape == NULL)
        return;
    Py_XDECREF(shape->event_type);
    Py_XDECREF(shape->source_type);
    Py_XDECREF(shape->ops);
    Py_XDECREF(shape->snapshots);
    for (int i = 0; i < EVENT_ATTRIBUTE_COUNT; i++)
        Py_XDECREF(shape->event_members[i]);
    for (int i = 0; i < SOURCE_ATTRIBUTE_COUNT; i++)
        Py_XDECREF(shape->source_members[i]);
    PyMem_Free(shape);
}

static int shape_traverse(const EventShape *shape, visitproc visit, void *arg)
{
    if (shape == NULL)
        return 0;
    Py_VISIT(shape->event_type);
    Py_VISIT(shape->source_type);
    Py_VISIT(shape->ops);
    Py_VISIT(shape->snapshots);
    for (int i = 0; i < EVENT_ATTRIBUTE_COUNT; i++)
        Py_VISIT(shape->event_members[i]);
    for (int i = 0; i < SOURCE_ATTRIBUTE_COUNT; i++)
        Py_VISIT(shape->source_members[i]);
    return 0;
}

/* The slot descriptors of a dataclass declared with slots=True, one per field name. */
static int slot_members(PyTypeObject *type, const char *const *names, int count, PyObject **members)
{
    for (int i = 0; i < count; i++) {
        members[i] = PyObject_GetAttrString((PyObject *)type, names[i]);
        if (members[i] == NULL)
            return -1;
        if (!Py_IS_TYPE(members[i], &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            return -1;
        }
    }
    return 0;
}

static EventShape *shape_build(PyObject *event_types)
{
    PyObject *event_type, *source_type, *ops, *snapshots;
    if (!PyArg_ParseTuple(event_types, "O!O!O!O!:event_types", &PyType_Type, &event_type, &PyType_Type,
                          &source_type, &PyDict_Type, &ops, &PyDict_Type, &snapshots))
        return NULL;
    EventShape *shape = allocate(1, sizeof(EventShape));
    if (shape == NULL)
        return NULL;
    shape->event_type = (PyTypeObject *)Py_NewRef(event_type);
    shape->source_type = (PyTypeObject *)Py_NewRef(source_type);
    shape->ops = Py_NewRef(ops);
    shape->snapshots = Py_NewRef(snapshots);
    if (slot_members(shape->event_type, EVENT_ATTRIBUTES, EVENT_ATTRIBUTE_COUNT, shape->event_members) < 0
        || slot_members(shape->source_type, SOURCE_ATTRIBUTES, SOURCE_ATTRIBUTE_COUNT, shape->source_members) < 0) {
        shape_free(shape);
        return NULL;
    }
    return shape;
}

/* The dataclass fields event() sets, for avro.py to check against events.py before using it. */
static int add_names(PyObject *module, const char *name, const char *const *names, int count)
{
    PyObject *tuple = PyTuple_New(count);
    for (int i = 0; tuple != NULL && i < count; i++) {
        PyObject *item = PyUnicode_FromString(names[i]);
        if (item == NULL)
            Py_CLEAR(tuple);
        else
            PyTuple_SET_ITEM(tuple, i, item);
    }
    int added = tuple == NULL ? -1 : PyModule_AddObjectRef(module, name, tuple);
    Py_XDECREF(tuple);
    return added;
}

/* Imports what the conversions need (call once from the module's init); -1 with an exception set. */
static int native_common_init(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return -1;
    PyObject *decimal = PyImport_ImportModule("decimal");
    if (decimal == NULL)
        return -1;
    DecimalType = PyObject_GetAttrString(decimal, "Decimal");
    Py_DECREF(decimal);
    FromIsoFormat = PyObject_GetAttrString((PyObject *)PyDateTimeAPI->DateTimeType, "fromisoformat");
    IntFromBytes = PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes");
    BigEndian = PyUnicode_InternFromString("big");
    PyObject *signed_name = PyUnicode_InternFromString("signed");
    SignedKeyword = signed_name == NULL ? NULL : PyTuple_Pack(1, signed_name);
    Py_XDECREF(signed_name);
    return DecimalType != NULL && FromIsoFormat != NULL && IntFromBytes != NULL && BigEndian != NULL
                   && SignedKeyword != NULL ? 0 : -1;
}

#endif
