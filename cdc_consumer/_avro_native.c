/* _avro_native: Avro binary bodies straight to the Python values cdc_consumer.avro returns.

   Why native: fastavro's schemaless_reader alone runs at a third of the Avro target, before any Connect
   semantics. Here each writer schema is compiled once (avro.py builds a description, Program() turns it
   into a tree of C nodes) and one C pass over the body builds the final values: dicts for records,
   Decimal, datetime and date for the hot Connect types, the TOAST placeholder already replaced.
   Rare conversions call the same Python converter the fastavro path uses (one source of semantics).

   Description grammar (nested tuples; avro.py's _AvroCompiler writes them):
     node       := ("null",) | (primitive, conversion) | ("fixed", conversion, size)
                 | ("enum", conversion, (symbol, ...)) | ("array", node) | ("map", node)
                 | ("union", (node, ...)) | ("record", ((name, node, form), ...))
                 | ("call", node, converter) | ("converted", node)
     primitive  := "boolean" | "int" | "long" | "float" | "double" | "string" | "bytes"
     conversion := None | ("decimal", scale, precision or None) | ("date",)
                 | ("timestamp_ms",) | ("timestamp_us",) | ("timestamp_ns",)
                 | ("zoned_timestamp", converter for offsets other than UTC)
     form       := None | str | bytes | list: the field's unavailable-value placeholder as read raw

   Modes: Connect semantics (conversions, "call" converters, placeholder forms) apply only while
   "converting"; otherwise values are what fastavro returns with logical types switched off. A Program
   starts in the mode it is given; "converted" switches a subtree on (the before/after rows of an
   envelope whose other fields stay raw, exactly as EnvelopeCodec uses them).

   Events: Program.event() reads a change envelope into its ChangeEvent directly, doing what
   EnvelopeCodec.event and source_from do for a well-formed one. It reads only the fields they use (the
   others are skipped, still fully checked) and fills the slots dataclasses without their Python-level
   __init__, which was most of the cost per event. Anything unusual (an unknown op) raises ValueError, and
   avro.py lets the Python path build or reject that record.

   Errors: a body that does not fit the schema raises MalformedAvro (a ValueError) naming the byte
   offset; every read is bounds-checked first. A value that fits the wire but not its conversion
   (a timestamp outside years 1..9999, too many decimal digits) raises ValueError or whatever the
   Python converter raised: avro.py then re-reads the body on the fastavro path for the exact error. */

#include "_native_common.h"  /* Decimal, datetime and date building, ChangeEvent/Source construction */

#define MAX_DEPTH 64                   /* nesting of a description; Connect schemas use a handful */
#define MAX_ZERO_WIDTH_ITEMS 100000    /* items per record that may take no bytes at all (nulls): 800 KB of list */

static PyObject *MalformedAvro;

typedef enum {
    K_NULL, K_BOOLEAN, K_INT, K_LONG, K_FLOAT, K_DOUBLE, K_STRING, K_BYTES, K_FIXED, K_ENUM,
    K_ARRAY, K_MAP, K_UNION, K_RECORD, K_CALL, K_CONVERTED
} Kind;

typedef enum { FORM_NONE, FORM_TEXT, FORM_BYTES, FORM_OTHER } FormKind;

/* A field's placeholder as its raw value would look: str and bytes are compared on the wire, before a
   conversion could misread them; anything else (a one-item list) as the raw Python value. */
typedef struct {
    FormKind kind;
    PyObject *object;
    const char *data;
    Py_ssize_t size;
} Form;

typedef struct Node Node;

typedef struct {
    PyObject *name;
    Node *node;
    Form form;
    int slot;  /* event programs: where the envelope or source projection keeps it, -1: skipped */
} Field;

struct Node {
    Kind kind;
    Conversion conversion;
    Py_ssize_t count;      /* fixed: size; union: branches; record: fields */
    Py_ssize_t min_size;   /* fewest bytes a value takes: bounds a block's item count before reading it */
    Py_ssize_t child_count;
    Node **children;       /* union branches; the one child of array, map, call, converted */
    Field *fields;
    PyObject *symbols;     /* enum: tuple of str */
    PyObject *callable;    /* call: the converter; zoned timestamp: the converter for non-UTC offsets */
    DecimalSpec decimal;   /* decimal: its digits allowed and exponent */
};

typedef struct {
    const uint8_t *start, *pos, *end;
    PyObject *unavailable;
    Py_ssize_t zero_width_left;  /* array items that take no bytes still allowed in this record */
} Reader;

static PyObject *read_value(Reader *r, const Node *n, bool converting, const Form *form);

/* ------------------------------------------------------------------------------- errors */

static PyObject *malformed(const Reader *r, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    PyObject *reason = PyUnicode_FromFormatV(format, args);
    va_end(args);
    if (reason != NULL) {
        PyErr_Format(MalformedAvro, "%U at byte %zd", reason, (Py_ssize_t)(r->pos - r->start));
        Py_DECREF(reason);
    }
    return NULL;
}

/* --------------------------------------------------------------------------- wire reads */

static int read_long(Reader *r, int64_t *out)
{
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
        if (shift > 63) {
            malformed(r, "varint longer than 10 bytes");
            return -1;
        }
        if (r->pos >= r->end) {
            malformed(r, "truncated: body ends inside a varint");
            return -1;
        }
        uint8_t byte = *r->pos++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            break;
    }
    *out = (int64_t)((value >> 1) ^ (~(value & 1) + 1));  /* zigzag */
    return 0;
}

static const uint8_t *take(Reader *r, int64_t size, const char *what)
{
    if (size > r->end - r->pos) {
        malformed(r, "truncated: %s of %lld bytes, %zd left", what, (long long)size, (Py_ssize_t)(r->end - r->pos));
        return NULL;
    }
    const uint8_t *start = r->pos;
    r->pos += size;
    return start;
}

/* string and bytes: a length, then that many bytes (all of them inside the body). */
static const uint8_t *read_sized(Reader *r, const char *what, Py_ssize_t *size)
{
    int64_t length;
    if (read_long(r, &length) < 0)
        return NULL;
    if (length < 0) {
        malformed(r, "negative %s length %lld", what, (long long)length);
        return NULL;
    }
    *size = (Py_ssize_t)length;
    return take(r, length, what);
}

/* Union branch, enum symbol: a varint that must index one of `count` choices. */
static int read_index(Reader *r, Py_ssize_t count, const char *what, Py_ssize_t *index)
{
    int64_t value;
    if (read_long(r, &value) < 0)
        return -1;
    if (value < 0 || value >= count) {
        malformed(r, "%s index %lld out of range 0..%zd", what, (long long)value, count - 1);
        return -1;
    }
    *index = (Py_ssize_t)value;
    return 0;
}

/* Items in the next array or map block (0 at the end); a negative count is followed by the block's
   byte size. The count is checked against the bytes left before anything is allocated for it; items
   that may take no bytes (nulls) are capped per record instead (MAX_ZERO_WIDTH_ITEMS over all its arrays,
   so many small arrays cannot add up to more memory than one long one). */
static int read_block_count(Reader *r, Py_ssize_t item_min_size, Py_ssize_t *count)
{
    int64_t items, byte_size;
    if (read_long(r, &items) < 0)
        return -1;
    if (items < 0) {
        if (items == INT64_MIN || read_long(r, &byte_size) < 0 || byte_size < 0) {
            if (!PyErr_Occurred())
                malformed(r, "bad block header");
            return -1;
        }
        items = -items;
    }
    Py_ssize_t left = r->end - r->pos;
    int64_t most = item_min_size > 0 ? left / item_min_size : r->zero_width_left;
    if (items > most) {
        malformed(r, "a block of %lld items cannot fit in the %zd bytes left", (long long)items, left);
        return -1;
    }
    if (item_min_size <= 0)
        r->zero_width_left -= (Py_ssize_t)items;
    *count = (Py_ssize_t)items;
    return 0;
}

static uint64_t little_endian(const uint8_t *bytes, int size)
{
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--)
        value = (value << 8) | bytes[i];
    return value;
}

/* ------------------------------------------------------------------- Connect conversions */

static bool form_matches_bytes(const Form *form, FormKind kind, const uint8_t *data, Py_ssize_t size)
{
    return form != NULL && form->kind == kind && form->size == size && memcmp(form->data, data, size) == 0;
}

/* ZonedTimestamp text (see zoned_timestamp in _native_common.h). Steals `text`. */
static PyObject *zoned_timestamp_of(const Node *n, PyObject *text)
{
    PyObject *moment = zoned_timestamp(n->callable, text);
    Py_DECREF(text);
    return moment;
}

static PyObject *integer_value(const Node *n, int64_t value, bool converting)
{
    if (!converting || n->conversion == C_NONE)
        return PyLong_FromLongLong(value);
    if (n->conversion == C_DATE)
        return date_value(value);
    return timestamp_value(n->conversion, value);
}

/* ------------------------------------------------------------------------- value reads */

static PyObject *read_string(Reader *r, const Node *n, bool converting, const Form *form)
{
    Py_ssize_t size;
    const uint8_t *data = read_sized(r, "string", &size);
    if (data == NULL)
        return NULL;
    if (converting && form_matches_bytes(form, FORM_TEXT, data, size))
        return Py_NewRef(r->unavailable);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)data, size, NULL);
    if (text == NULL || !converting || n->conversion != C_ZONED_TIMESTAMP)
        return text;
    return zoned_timestamp_of(n, text);
}

/* bytes and fixed: raw bytes, or a Decimal when converting. */
static PyObject *bytes_value(Reader *r, const Node *n, const uint8_t *data, Py_ssize_t size, bool converting,
                             const Form *form)
{
    if (converting && form_matches_bytes(form, FORM_BYTES, data, size))
        return Py_NewRef(r->unavailable);
    if (converting && n->conversion == C_DECIMAL)
        return decimal_from_twos_complement(&n->decimal, data, size);
    return PyBytes_FromStringAndSize((const char *)data, size);
}

static PyObject *read_bytes(Reader *r, const Node *n, bool converting, const Form *form)
{
    Py_ssize_t size;
    const uint8_t *data = read_sized(r, "bytes", &size);
    return data == NULL ? NULL : bytes_value(r, n, data, size, converting, form);
}

/* The placeholder check of values compared as Python objects (a converted field's raw value, an array). */
static int form_matches_object(const Form *form, PyObject *value)
{
    if (form == NULL || form->kind == FORM_NONE)
        return 0;
    return PyObject_RichCompareBool(value, form->object, Py_EQ);
}

static PyObject *placeholder_or(Reader *r, PyObject *value, const Form *form)
{
    int matches = form_matches_object(form, value);
    if (matches == 0)
        return value;
    Py_DECREF(value);
    return matches < 0 ? NULL : Py_NewRef(r->unavailable);
}

static PyObject *read_enum(Reader *r, const Node *n, bool converting, const Form *form)
{
    Py_ssize_t index;
    if (read_index(r, PyTuple_GET_SIZE(n->symbols), "enum", &index) < 0)
        return NULL;
    PyObject *symbol = Py_NewRef(PyTuple_GET_ITEM(n->symbols, index));
    return converting && form != NULL && form->kind == FORM_TEXT ? placeholder_or(r, symbol, form) : symbol;
}

/* Fewest bytes one item of an array or map block takes (a map entry has a key string too). */
static Py_ssize_t block_item_min_size(const Node *n)
{
    return n->children[0]->min_size + (n->kind == K_MAP ? 1 : 0);
}

static PyObject *read_array(Reader *r, const Node *n, bool converting, const Form *form)
{
    PyObject *items = PyList_New(0);
    Py_ssize_t count;
    while (items != NULL) {
        if (read_block_count(r, block_item_min_size(n), &count) < 0)
            goto fail;
        if (count == 0)
            break;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *item = read_value(r, n->children[0], converting, NULL);
            if (item == NULL || PyList_Append(items, item) < 0) {
                Py_XDECREF(item);
                goto fail;
            }
            Py_DECREF(item);
        }
    }
    return converting && items != NULL && form != NULL && form->kind == FORM_OTHER
               ? placeholder_or(r, items, form) : items;
fail:
    Py_DECREF(items);
    return NULL;
}

static PyObject *read_map(Reader *r, const Node *n, bool converting)
{
    PyObject *entries = PyDict_New();
    Py_ssize_t count;
    while (entries != NULL) {
        if (read_block_count(r, block_item_min_size(n), &count) < 0)  /* a map entry takes a byte at least */
            goto fail;
        if (count == 0)
            return entries;
        for (Py_ssize_t i = 0; i < count; i++) {
            PyObject *key = read_string(r, n, false, NULL);
            PyObject *value = key == NULL ? NULL : read_value(r, n->children[0], converting, NULL);
            int stored = value == NULL ? -1 : PyDict_SetItem(entries, key, value);
            Py_XDECREF(key);
            Py_XDECREF(value);
            if (stored < 0)
                goto fail;
        }
    }
    return NULL;
fail:
    Py_DECREF(entries);
    return NULL;
}

static PyObject *read_record(Reader *r, const Node *n, bool converting)
{
    PyObject *row = PyDict_New();
    if (row == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n->count; i++) {
        const Field *field = &n->fields[i];
        PyObject *value = read_value(r, field->node, converting, converting ? &field->form : NULL);
        if (value == NULL || PyDict_SetItem(row, field->name, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(row);
            return NULL;
        }
        Py_DECREF(value);
    }
    return row;
}

/* A conversion kept in Python: read the raw value, then call the converter (never on None). */
static PyObject *read_called(Reader *r, const Node *n, bool converting, const Form *form)
{
    PyObject *raw = read_value(r, n->children[0], false, NULL);
    if (raw == NULL || raw == Py_None || !converting)
        return raw;
    int matches = form_matches_object(form, raw);
    if (matches != 0) {
        Py_DECREF(raw);
        return matches < 0 ? NULL : Py_NewRef(r->unavailable);
    }
    PyObject *value = PyObject_CallOneArg(n->callable, raw);
    Py_DECREF(raw);
    return value;
}

static PyObject *read_value(Reader *r, const Node *n, bool converting, const Form *form)
{
    int64_t integer;
    const uint8_t *data;
    Py_ssize_t index;
    switch (n->kind) {
    case K_NULL:
        Py_RETURN_NONE;
    case K_BOOLEAN:
        data = take(r, 1, "boolean");
        return data == NULL ? NULL : PyBool_FromLong(*data != 0);  /* like fastavro: any non-zero byte */
    case K_INT:
    case K_LONG:
        return read_long(r, &integer) < 0 ? NULL : integer_value(n, integer, converting);
    case K_FLOAT: {
        data = take(r, 4, "float");
        if (data == NULL)
            return NULL;
        uint32_t bits = (uint32_t)little_endian(data, 4);
        float number;
        memcpy(&number, &bits, sizeof(number));
        return PyFloat_FromDouble((double)number);
    }
    case K_DOUBLE: {
        data = take(r, 8, "double");
        if (data == NULL)
            return NULL;
        uint64_t bits = little_endian(data, 8);
        double number;
        memcpy(&number, &bits, sizeof(number));
        return PyFloat_FromDouble(number);
    }
    case K_STRING:
        return read_string(r, n, converting, form);
    case K_BYTES:
        return read_bytes(r, n, converting, form);
    case K_FIXED:
        data = take(r, n->count, "fixed");
        return data == NULL ? NULL : bytes_value(r, n, data, n->count, converting, form);
    case K_ENUM:
        return read_enum(r, n, converting, form);
    case K_ARRAY:
        return read_array(r, n, converting, form);
    case K_MAP:
        return read_map(r, n, converting);
    case K_UNION:
        if (read_index(r, n->count, "union branch", &index) < 0)
            return NULL;
        return read_value(r, n->children[index], converting, form);
    case K_RECORD:
        return read_record(r, n, converting);
    case K_CALL:
        return read_called(r, n, converting, form);
    case K_CONVERTED:
        return read_value(r, n->children[0], true, NULL);
    }
    PyErr_SetString(PyExc_SystemError, "unknown node kind");
    return NULL;
}

/* ---------------------------------------------------------------------- skipping values */

/* UTF-8 that PyUnicode_DecodeUTF8 would accept: a skipped string fails exactly where a read one would. */
static int skip_text(Reader *r)
{
    Py_ssize_t size;
    const uint8_t *data = read_sized(r, "string", &size);
    if (data == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (data[i] >= 0x80) {  /* not ASCII: Python's decoder judges it */
            PyObject *text = PyUnicode_DecodeUTF8((const char *)data, size, NULL);
            Py_XDECREF(text);
            return text == NULL ? -1 : 0;
        }
    }
    return 0;
}

static int skip_value(Reader *r, const Node *n);

static int skip_blocks(Reader *r, const Node *n)
{
    Py_ssize_t count;
    for (;;) {
        if (read_block_count(r, block_item_min_size(n), &count) < 0)
            return -1;
        if (count == 0)
            return 0;
        for (Py_ssize_t i = 0; i < count; i++) {
            if ((n->kind == K_MAP && skip_text(r) < 0) || skip_value(r, n->children[0]) < 0)
                return -1;
        }
    }
}

/* Past one raw value without building it (envelope fields no event needs), with every check of a read. */
static int skip_value(Reader *r, const Node *n)
{
    int64_t integer;
    Py_ssize_t size, index;
    switch (n->kind) {
    case K_NULL:
        return 0;
    case K_BOOLEAN:
    case K_FLOAT:
    case K_DOUBLE:
    case K_FIXED:
        return take(r, n->kind == K_FIXED ? n->count : n->min_size, "value") == NULL ? -1 : 0;
    case K_INT:
    case K_LONG:
        return read_long(r, &integer);
    case K_ENUM:
        return read_index(r, PyTuple_GET_SIZE(n->symbols), "enum", &index);
    case K_STRING:
        return skip_text(r);
    case K_BYTES:
        return read_sized(r, "bytes", &size) == NULL ? -1 : 0;
    case K_ARRAY:
    case K_MAP:
        return skip_blocks(r, n);
    case K_UNION:
        if (read_index(r, n->count, "union branch", &index) < 0)
            return -1;
        return skip_value(r, n->children[index]);
    case K_RECORD:
        for (Py_ssize_t i = 0; i < n->count; i++)
            if (skip_value(r, n->fields[i].node) < 0)
                return -1;
        return 0;
    case K_CALL:
    case K_CONVERTED:
        return skip_value(r, n->children[0]);
    }
    PyErr_SetString(PyExc_SystemError, "unknown node kind");
    return -1;
}

/* ------------------------------------------------------------ change events from envelopes */

/* A record's fields that land in slots; the others are skipped. Slots hold new references. */
static int read_projection(Reader *r, const Node *record, PyObject **slots)
{
    for (Py_ssize_t i = 0; i < record->count; i++) {
        const Field *field = &record->fields[i];
        if (field->slot < 0) {
            if (skip_value(r, field->node) < 0)
                return -1;
            continue;
        }
        PyObject *value = read_value(r, field->node, false, NULL);
        if (value == NULL)
            return -1;
        Py_XSETREF(slots[field->slot], value);
    }
    return 0;
}

static int read_envelope_field(Reader *r, const Field *field, PyObject **slots, PyObject **source_slots)
{
    if (field->slot < 0)
        return skip_value(r, field->node);
    PyObject *value = field->slot != E_SOURCE ? read_value(r, field->node, false, NULL)
                      : read_projection(r, field->node, source_slots) < 0 ? NULL
                                                                           : Py_NewRef(Py_True);  /* Source below */
    if (value == NULL)
        return -1;
    Py_XSETREF(slots[field->slot], value);
    return 0;
}

/* EnvelopeCodec.event of a change event: the envelope read field by field, the source into a Source. */
static PyObject *change_event(const EventShape *shape, Reader *r, const Node *envelope, PyObject *const *record)
{
    PyObject *slots[ENVELOPE_SLOTS] = {NULL}, *source_slots[SOURCE_SLOTS] = {NULL}, *event = NULL;
    PyObject *op = NULL, *source = NULL, *ts_us = NULL;
    for (Py_ssize_t i = 0; i < envelope->count; i++)
        if (read_envelope_field(r, &envelope->fields[i], slots, source_slots) < 0)
            goto done;
    if (r->pos != r->end) {
        PyErr_Format(MalformedAvro, "%zd bytes left over", (Py_ssize_t)(r->end - r->pos));
        goto done;
    }
    if (slots[E_OP] == NULL || slots[E_OP] == Py_None) {
        PyErr_SetString(PyExc_ValueError, "no op");
        goto done;
    }
    if ((op = member_of(shape->ops, slots[E_OP], "op")) == NULL
        || (source = slots[E_SOURCE] == NULL ? Py_NewRef(Py_None) : source_instance(shape, source_slots)) == NULL
        || (ts_us = micros_of(slots[E_TS_US], slots[E_TS_MS])) == NULL)
        goto done;
    PyObject *values[EVENT_ATTRIBUTE_COUNT] = {
        Py_NewRef(record[0]), Py_NewRef(record[3]), Py_NewRef(record[4]), op, Py_NewRef(record[1]),
        slot_value(slots[E_BEFORE]), slot_value(slots[E_AFTER]), source, Py_NewRef(record[2]),
        Py_NewRef(Py_False), Py_NewRef(Py_None), slot_value(slots[E_TRANSACTION]), Py_NewRef(Py_True), ts_us};
    op = source = ts_us = NULL;  /* the instance owns them now */
    event = dataclass_instance(shape->event_type, shape->event_members, values, EVENT_ATTRIBUTE_COUNT);
done:
    Py_XDECREF(op);
    Py_XDECREF(source);
    Py_XDECREF(ts_us);
    for (int i = 0; i < ENVELOPE_SLOTS; i++)
        Py_XDECREF(slots[i]);
    for (int i = 0; i < SOURCE_SLOTS; i++)
        Py_XDECREF(source_slots[i]);
    return event;
}

/* -------------------------------------------------------------------- building a program */

static const struct {
    const char *tag;
    Kind kind;
    Py_ssize_t arity;
} KINDS[] = {
    {"null", K_NULL, 1}, {"boolean", K_BOOLEAN, 2}, {"int", K_INT, 2}, {"long", K_LONG, 2},
    {"float", K_FLOAT, 2}, {"double", K_DOUBLE, 2}, {"string", K_STRING, 2}, {"bytes", K_BYTES, 2},
    {"fixed", K_FIXED, 3}, {"enum", K_ENUM, 3}, {"array", K_ARRAY, 2}, {"map", K_MAP, 2},
    {"union", K_UNION, 2}, {"record", K_RECORD, 2}, {"call", K_CALL, 3}, {"converted", K_CONVERTED, 2},
};

static const struct {
    const char *tag;
    Conversion conversion;
    Py_ssize_t arity;
    Kind wire_kinds[2];  /* the Avro types it reads */
} CONVERSIONS[] = {
    {"decimal", C_DECIMAL, 3, {K_BYTES, K_FIXED}}, {"date", C_DATE, 1, {K_INT, K_LONG}},
    {"timestamp_ms", C_TIMESTAMP_MS, 1, {K_INT, K_LONG}}, {"timestamp_us", C_TIMESTAMP_US, 1, {K_INT, K_LONG}},
    {"timestamp_ns", C_TIMESTAMP_NS, 1, {K_INT, K_LONG}},
    {"zoned_timestamp", C_ZONED_TIMESTAMP, 2, {K_STRING, K_STRING}},
};

static int bad_description(PyObject *description, const char *expected)
{
    PyErr_Format(PyExc_ValueError, "bad Avro program description %.200R: expected %s", description, expected);
    return -1;
}

static void node_free(Node *n)
{
    if (n == NULL)
        return;
    for (Py_ssize_t i = 0; i < n->child_count; i++)
        node_free(n->children[i]);
    PyMem_Free(n->children);
    if (n->fields != NULL) {
        for (Py_ssize_t i = 0; i < n->count; i++) {
            Py_XDECREF(n->fields[i].name);
            node_free(n->fields[i].node);
            Py_XDECREF(n->fields[i].form.object);
        }
        PyMem_Free(n->fields);
    }
    Py_XDECREF(n->symbols);
    Py_XDECREF(n->callable);
    PyMem_Free(n);
}

/* The Python objects of a node tree, for the collector. */
static int node_traverse(const Node *n, visitproc visit, void *arg)
{
    if (n == NULL)
        return 0;
    Py_VISIT(n->symbols);
    Py_VISIT(n->callable);
    for (Py_ssize_t i = 0; n->children != NULL && i < n->child_count; i++) {
        int visited = node_traverse(n->children[i], visit, arg);
        if (visited != 0)
            return visited;
    }
    for (Py_ssize_t i = 0; n->fields != NULL && i < n->count; i++) {
        Py_VISIT(n->fields[i].name);
        Py_VISIT(n->fields[i].form.object);
        int visited = node_traverse(n->fields[i].node, visit, arg);
        if (visited != 0)
            return visited;
    }
    return 0;
}

static Node *node_build(PyObject *description, int depth);

static int build_children(Node *n, PyObject *descriptions, int depth)
{
    n->child_count = PyTuple_GET_SIZE(descriptions);
    n->children = allocate(n->child_count, sizeof(Node *));
    if (n->children == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n->child_count; i++) {
        n->children[i] = node_build(PyTuple_GET_ITEM(descriptions, i), depth + 1);
        if (n->children[i] == NULL)
            return -1;
    }
    return 0;
}

static int build_form(Form *form, PyObject *object)
{
    if (object == Py_None)
        return 0;
    form->object = Py_NewRef(object);
    if (PyUnicode_Check(object)) {
        form->kind = FORM_TEXT;
        form->data = PyUnicode_AsUTF8AndSize(object, &form->size);
        return form->data == NULL ? -1 : 0;
    }
    if (PyBytes_Check(object)) {
        form->kind = FORM_BYTES;
        form->data = PyBytes_AS_STRING(object);
        form->size = PyBytes_GET_SIZE(object);
        return 0;
    }
    form->kind = FORM_OTHER;
    return 0;
}

static int build_record(Node *n, PyObject *fields, int depth)
{
    n->count = PyTuple_GET_SIZE(fields);
    n->fields = allocate(n->count, sizeof(Field));
    if (n->fields == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n->count; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        if (!PyTuple_Check(field) || PyTuple_GET_SIZE(field) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(field, 0)))
            return bad_description(field, "a (name, node, form) field");
        n->fields[i].slot = -1;
        n->fields[i].name = Py_NewRef(PyTuple_GET_ITEM(field, 0));
        PyUnicode_InternInPlace(&n->fields[i].name);
        n->fields[i].node = node_build(PyTuple_GET_ITEM(field, 1), depth + 1);
        if (n->fields[i].node == NULL || build_form(&n->fields[i].form, PyTuple_GET_ITEM(field, 2)) < 0)
            return -1;
        n->min_size += n->fields[i].node->min_size;
    }
    return 0;
}

static int build_decimal(Node *n, PyObject *conversion)
{
    if (decimal_spec_build(&n->decimal, PyTuple_GET_ITEM(conversion, 1), PyTuple_GET_ITEM(conversion, 2)) == 0)
        return 0;
    if (PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        return bad_description(conversion, "a decimal scale and precision a PostgreSQL numeric can have");
    }
    return -1;
}

static int build_conversion(Node *n, PyObject *conversion)
{
    if (conversion == Py_None)
        return 0;
    const char *tag = tag_of(conversion);
    if (tag == NULL)
        return PyErr_Occurred() ? -1 : bad_description(conversion, "None or a conversion tuple");
    for (size_t i = 0; i < sizeof(CONVERSIONS) / sizeof(CONVERSIONS[0]); i++) {
        if (strcmp(tag, CONVERSIONS[i].tag) != 0)
            continue;
        if (PyTuple_GET_SIZE(conversion) != CONVERSIONS[i].arity)
            return bad_description(conversion, "the number of items its conversion takes");
        if (n->kind != CONVERSIONS[i].wire_kinds[0] && n->kind != CONVERSIONS[i].wire_kinds[1])
            return bad_description(conversion, "a conversion that reads this Avro type");
        n->conversion = CONVERSIONS[i].conversion;
        if (n->conversion == C_DECIMAL)
            return build_decimal(n, conversion);
        if (n->conversion == C_ZONED_TIMESTAMP) {
            if (!PyCallable_Check(PyTuple_GET_ITEM(conversion, 1)))
                return bad_description(conversion, "(\"zoned_timestamp\", converter)");
            n->callable = Py_NewRef(PyTuple_GET_ITEM(conversion, 1));
        }
        return 0;
    }
    return bad_description(conversion, "a known conversion");
}

/* The description's items after its tag, checked for the types each kind needs. */
static int build_parts(Node *n, PyObject *description, int depth)
{
    PyObject *first = PyTuple_GET_SIZE(description) > 1 ? PyTuple_GET_ITEM(description, 1) : NULL;
    PyObject *second = PyTuple_GET_SIZE(description) > 2 ? PyTuple_GET_ITEM(description, 2) : NULL;
    switch (n->kind) {
    case K_NULL:
        return 0;
    case K_FIXED:
        n->count = PyLong_AsSsize_t(second);
        if (n->count < 0)
            return PyErr_Occurred() ? -1 : bad_description(description, "a fixed size >= 0");
        n->min_size = n->count;
        return build_conversion(n, first);
    case K_ENUM:
        if (!PyTuple_Check(second) || PyTuple_GET_SIZE(second) == 0)
            return bad_description(description, "a tuple of enum symbols");
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(second); i++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(second, i)))
                return bad_description(description, "str enum symbols");
        n->symbols = Py_NewRef(second);
        n->min_size = 1;
        return build_conversion(n, first);
    case K_ARRAY:
    case K_MAP:
    case K_CONVERTED:
    case K_CALL: {
        PyObject *child = PyTuple_Pack(1, first);
        int built = child == NULL ? -1 : build_children(n, child, depth);
        Py_XDECREF(child);
        if (built < 0)
            return -1;
        n->min_size = n->kind == K_ARRAY || n->kind == K_MAP ? 1 : n->children[0]->min_size;
        if (n->kind != K_CALL)
            return 0;
        if (!PyCallable_Check(second))
            return bad_description(description, "a callable converter");
        n->callable = Py_NewRef(second);
        return 0;
    }
    case K_UNION:
        if (!PyTuple_Check(first) || PyTuple_GET_SIZE(first) == 0)
            return bad_description(description, "a tuple of union branches");
        if (build_children(n, first, depth) < 0)
            return -1;
        n->count = n->child_count;
        n->min_size = PY_SSIZE_T_MAX;
        for (Py_ssize_t i = 0; i < n->count; i++)
            n->min_size = Py_MIN(n->min_size, n->children[i]->min_size);
        n->min_size += 1;  /* the branch index */
        return 0;
    case K_RECORD:
        if (!PyTuple_Check(first))
            return bad_description(description, "a tuple of record fields");
        return build_record(n, first, depth);
    default:  /* boolean, int, long, float, double, string, bytes */
        n->min_size = n->kind == K_FLOAT ? 4 : n->kind == K_DOUBLE ? 8 : 1;
        return build_conversion(n, first);
    }
}

static Node *node_build(PyObject *description, int depth)
{
    if (depth > MAX_DEPTH) {
        bad_description(description, "a schema nested less deeply");
        return NULL;
    }
    const char *tag = tag_of(description);
    if (tag == NULL) {
        if (!PyErr_Occurred())
            bad_description(description, "a tuple starting with a node kind");
        return NULL;
    }
    for (size_t i = 0; i < sizeof(KINDS) / sizeof(KINDS[0]); i++) {
        if (strcmp(tag, KINDS[i].tag) != 0)
            continue;
        if (PyTuple_GET_SIZE(description) != KINDS[i].arity) {
            bad_description(description, "the number of items its kind takes");
            return NULL;
        }
        Node *n = allocate(1, sizeof(Node));
        if (n == NULL)
            return NULL;
        n->kind = KINDS[i].kind;
        if (build_parts(n, description, depth) < 0) {
            node_free(n);
            return NULL;
        }
        return n;
    }
    bad_description(description, "a known node kind");
    return NULL;
}

/* ------------------------------------------------------------------------ Program type */

typedef struct {
    PyObject_HEAD
    Node *root;
    PyObject *unavailable;
    EventShape *shape;  /* event programs only */
    bool converting;
} Program;

static int name_slot(PyObject *name, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
            return i;
    return -1;
}

/* Marks which envelope and source fields an event needs; the source must be a plain record. */
static int assign_slots(Node *envelope)
{
    if (envelope->kind != K_RECORD) {
        PyErr_SetString(PyExc_ValueError, "an event program reads a record (the envelope)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < envelope->count; i++) {
        Field *field = &envelope->fields[i];
        field->slot = name_slot(field->name, ENVELOPE_FIELDS, ENVELOPE_SLOTS);
        if (field->slot != E_SOURCE)
            continue;
        if (field->node->kind != K_RECORD) {
            PyErr_SetString(PyExc_ValueError, "an event program needs the envelope's source to be a record");
            return -1;
        }
        for (Py_ssize_t j = 0; j < field->node->count; j++)
            field->node->fields[j].slot = name_slot(field->node->fields[j].name, SOURCE_FIELDS, SOURCE_SLOTS);
    }
    return 0;
}

static PyObject *Program_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"description", "converting", "unavailable", "event_types", NULL};
    PyObject *description, *unavailable, *event_types = Py_None;
    int converting;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OpO|O:Program", keywords, &description, &converting,
                                     &unavailable, &event_types))
        return NULL;
    Program *self = (Program *)gc_object_new(type, sizeof(Program));
    if (self == NULL)
        return NULL;
    self->unavailable = Py_NewRef(unavailable);
    self->converting = converting;
    self->root = node_build(description, 0);
    if (self->root == NULL || (event_types != Py_None && (self->shape = shape_build(event_types)) == NULL)
        || (self->shape != NULL && assign_slots(self->root) < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    return gc_object_ready((PyObject *)self);
}

static int Program_traverse(Program *self, visitproc visit, void *arg)
{
    Py_VISIT(self->unavailable);
    int visited = node_traverse(self->root, visit, arg);
    return visited != 0 ? visited : shape_traverse(self->shape, visit, arg);
}

/* "call" converters may hold what holds this Program (avro.py's compiled schema): a cycle. Everything is
   detached first, then released, so no Python code run by a release sees a half-freed tree. */
static int Program_clear(Program *self)
{
    Node *root = self->root;
    EventShape *shape = self->shape;
    self->root = NULL;
    self->shape = NULL;
    node_free(root);
    shape_free(shape);
    Py_CLEAR(self->unavailable);
    return 0;
}

static void Program_dealloc(Program *self)
{
    PyObject_GC_UnTrack(self);
    Program_clear(self);
    PyObject_GC_Del(self);
}

/* A reader over data[start:]; the caller releases `view`. */
static int open_reader(Program *self, PyObject *data, PyObject *start, Py_buffer *view, Reader *r)
{
    if (self->root == NULL) {
        cleared_error("Program");
        return -1;
    }
    Py_ssize_t offset = start == NULL ? 0 : PyLong_AsSsize_t(start);
    if (offset == -1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (offset < 0 || offset > view->len) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_IndexError, "start %zd outside the %zd bytes", offset, view->len);
        return -1;
    }
    r->start = r->pos = (const uint8_t *)view->buf + offset;
    r->end = (const uint8_t *)view->buf + view->len;
    r->unavailable = self->unavailable;
    r->zero_width_left = MAX_ZERO_WIDTH_ITEMS;
    return 0;
}

static int check_arguments(const char *method, Py_ssize_t given, Py_ssize_t least, Py_ssize_t most)
{
    if (given >= least && given <= most)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)", method, least, most, given);
    return -1;
}

static PyObject *Program_read(Program *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_arguments("read", nargs, 1, 2) < 0)
        return NULL;
    Py_buffer view;
    Reader r;
    if (open_reader(self, args[0], nargs > 1 ? args[1] : NULL, &view, &r) < 0)
        return NULL;
    PyObject *value = read_value(&r, self->root, self->converting, NULL);
    if (value != NULL && r.pos != r.end) {
        Py_CLEAR(value);
        PyErr_Format(MalformedAvro, "%zd bytes left over", (Py_ssize_t)(r.end - r.pos));
    }
    PyBuffer_Release(&view);
    return value;
}

static PyObject *Program_event(Program *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->root == NULL)
        return cleared_error("Program");
    if (self->shape == NULL) {
        PyErr_SetString(PyExc_TypeError, "event() needs a Program built with event_types");
        return NULL;
    }
    if (check_arguments("event", nargs, 7, 7) < 0)
        return NULL;
    Py_buffer view;
    Reader r;
    if (open_reader(self, args[0], args[1], &view, &r) < 0)
        return NULL;
    PyObject *event = change_event(self->shape, &r, self->root, args + 2);
    PyBuffer_Release(&view);
    return event;
}

static PyMethodDef Program_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Program_read, METH_FASTCALL,
     "read(data, start=0) -> the value of the Avro body data[start:]."},
    {"event", (PyCFunction)(void (*)(void))Program_event, METH_FASTCALL,
     "event(data, start, topic, key, headers, partition, offset) -> the ChangeEvent of the envelope in data[start:]."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc_consumer._avro_native.Program",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Program_traverse,
    .tp_clear = (inquiry)Program_clear,
    .tp_doc = "Program(description, converting, unavailable, event_types=None): one writer schema compiled.\n\n"
              "event_types: (ChangeEvent, Source, {wire op: Op}, {wire snapshot: Snapshot}) for event().",
    .tp_new = Program_new,
    .tp_dealloc = (destructor)Program_dealloc,
    .tp_methods = Program_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc_consumer._avro_native",
    .m_doc = "Avro binary bodies straight to cdc_consumer.avro's values (see the comment atop _avro_native.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__avro_native(void)
{
    if (native_common_init() < 0 || PyType_Ready(&ProgramType) < 0)
        return NULL;
    MalformedAvro = PyErr_NewExceptionWithDoc(
        "cdc_consumer._avro_native.MalformedAvro", "The Avro body does not fit the schema's program.",
        PyExc_ValueError, NULL);
    PyObject *m = MalformedAvro != NULL ? PyModule_Create(&module) : NULL;
    if (m == NULL || PyModule_AddObjectRef(m, "MalformedAvro", MalformedAvro) < 0
        || PyModule_AddObjectRef(m, "Program", (PyObject *)&ProgramType) < 0
        || add_names(m, "EVENT_ATTRIBUTES", EVENT_ATTRIBUTES, EVENT_ATTRIBUTE_COUNT) < 0
        || add_names(m, "SOURCE_ATTRIBUTES", SOURCE_ATTRIBUTES, SOURCE_ATTRIBUTE_COUNT) < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
