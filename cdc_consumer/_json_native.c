/* _json_native: Debezium JSON payloads (already parsed by orjson) to the values cdc_consumer.decoder returns.

   Why native: after orjson has parsed the payload, walking it in Python (StructConverter, one converter
   call per field, Decimal via int.from_bytes, ChangeEvent's and Source's dataclass __init__) took three
   quarters of the JSON decode time. Here each Connect schema is compiled once (decoder.py's schema walk
   builds a description beside the Python converters; Program() turns it into a tree of C nodes) and one
   C pass converts the payload: base64 decoded in C, Decimal built from its digit string, datetime and
   date for the hot Connect types, the TOAST placeholder replaced, and a change envelope's ChangeEvent and
   Source filled in directly (shared with _avro_native: _native_common.h).

   Description grammar (nested tuples; decoder.py's _plan writes them):
     node     := None                                  the value stays as parsed (no converter)
               | ("call", converter)                   the Python converter converts it
               | ("decimal", scale, precision or None, converter)
               | ("integer", bits, converter) | ("string", converter) | ("boolean", converter)
                                                       plain fields: the value is kept when it has the
                                                       type exactly (an int within bits), else converter
               | ("timestamp_ms" | "timestamp_us" | "timestamp_ns" | "date" | "zoned_timestamp"
                  | "double" | "bytes", converter)
               | ("struct", ((name, node, form), ...), converter)
               | ("array", node, converter)
     envelope := ("envelope", node of `before`, node of `after`)
     form     := str | [str]: the field's unavailable-value placeholder as it looks on the wire

   Semantics are the Python converters' (debezium.py): a node converts natively only the exact case it
   knows (a base64 str for a decimal, an int for a timestamp, a dict for a struct, a list for an array,
   ...) and hands any other value to its Python converter, which converts or raises exactly as the Python
   path does. Structs are converted in place, as StructConverter does (same dict, same key order).

   Errors: anything raised here (a value out of range, a missing field, a converter's DecodeError or
   InexactNumber) propagates; decoder.py then parses the record again and decodes it on the Python path,
   which raises its exact named error (or, for decimal.format=NUMERIC, re-parses with exact numbers). */

#include "_native_common.h"

#define MAX_DEPTH 64
#define MAX_DECIMAL_BYTES 48  /* base64 decimals decoded on the stack; longer ones go to the converter */

typedef enum {
    J_CALL, J_DECIMAL, J_TIMESTAMP_MS, J_TIMESTAMP_US, J_TIMESTAMP_NS, J_DATE, J_ZONED_TIMESTAMP, J_DOUBLE,
    J_BYTES, J_STRUCT, J_ARRAY, J_INTEGER, J_STRING, J_BOOLEAN
} JsonKind;

typedef struct JsonNode JsonNode;

typedef struct {
    PyObject *name;       /* interned */
    JsonNode *node;       /* NULL: no converter */
    PyObject *form;       /* the placeholder text (str) */
    bool form_is_list;    /* the placeholder is [text] (array fields) */
} JsonField;

struct JsonNode {
    JsonKind kind;
    PyObject *converter;  /* the Python converter of this node: every value the node does not know */
    DecimalSpec decimal;
    long long low, high;  /* integer: the range of its bits */
    Py_ssize_t count;     /* struct: fields */
    JsonField *fields;
    JsonNode *item;       /* array: its items' node */
};

static PyObject *convert_value(const JsonNode *n, PyObject *value, PyObject *unavailable);

/* Interned payload keys EnvelopeCodec.event and source_from read. */
static PyObject *ENVELOPE_KEYS[ENVELOPE_SLOTS];
static PyObject *SOURCE_KEYS[SOURCE_SLOTS];

/* ---------------------------------------------------------------------------------- base64 */

static int8_t BASE64_VALUES[256];

static void base64_table_init(void)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(BASE64_VALUES, -1, sizeof(BASE64_VALUES));
    for (int i = 0; i < 64; i++)
        BASE64_VALUES[(uint8_t)alphabet[i]] = (int8_t)i;
}

/* Bytes of canonical base64 text (length a multiple of 4, '=' only as its last one or two characters,
   unused bits zero): a subset of what binascii.a2b_base64(strict_mode=True) accepts, decoded the same.
   -1 (no exception set) for anything else: the Python converter then decides. */
static Py_ssize_t base64_size(const uint8_t *text, Py_ssize_t length)
{
    if (length == 0 || length % 4 != 0)
        return -1;
    Py_ssize_t padding = text[length - 1] == '=' ? (text[length - 2] == '=' ? 2 : 1) : 0;
    return length / 4 * 3 - padding;
}

static int base64_decode(const uint8_t *text, Py_ssize_t length, uint8_t *out)
{
    Py_ssize_t padding = text[length - 1] == '=' ? (text[length - 2] == '=' ? 2 : 1) : 0;
    Py_ssize_t full = length - (padding ? 4 : 0);
    for (Py_ssize_t i = 0; i < full; i += 4) {
        int a = BASE64_VALUES[text[i]], b = BASE64_VALUES[text[i + 1]], c = BASE64_VALUES[text[i + 2]],
            d = BASE64_VALUES[text[i + 3]];
        if ((a | b | c | d) < 0)
            return -1;
        uint32_t group = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        *out++ = (uint8_t)(group >> 16);
        *out++ = (uint8_t)(group >> 8);
        *out++ = (uint8_t)group;
    }
    if (padding) {
        const uint8_t *last = text + full;
        int a = BASE64_VALUES[last[0]], b = BASE64_VALUES[last[1]];
        int c = padding == 1 ? BASE64_VALUES[last[2]] : 0;
        if ((a | b | c) < 0)
            return -1;
        if (padding == 2 ? (b & 0x0f) != 0 : (c & 0x03) != 0)  /* unused bits set: not canonical */
            return -1;
        *out++ = (uint8_t)(a << 2 | b >> 4);
        if (padding == 1)
            *out = (uint8_t)((b & 0x0f) << 4 | c >> 2);
    }
    return 0;
}

/* The ASCII text of an exact str, or NULL (nothing set) for anything else. */
static const uint8_t *ascii_text(PyObject *value, Py_ssize_t *length)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value))
        return NULL;
    *length = PyUnicode_GET_LENGTH(value);
    return PyUnicode_1BYTE_DATA(value);
}

/* --------------------------------------------------------------------------- conversions */

static PyObject *call_converter(const JsonNode *n, PyObject *value)
{
    return PyObject_CallOneArg(n->converter, value);
}

static PyObject *decimal_of(const JsonNode *n, PyObject *value)
{
    Py_ssize_t length, size;
    const uint8_t *text = ascii_text(value, &length);
    uint8_t raw[MAX_DECIMAL_BYTES];
    if (text == NULL || (size = base64_size(text, length)) <= 0 || size > MAX_DECIMAL_BYTES
        || base64_decode(text, length, raw) < 0)
        return call_converter(n, value);
    return decimal_from_twos_complement(&n->decimal, raw, size);
}

static PyObject *bytes_of(const JsonNode *n, PyObject *value)
{
    Py_ssize_t length, size;
    const uint8_t *text = ascii_text(value, &length);
    if (text == NULL || (size = base64_size(text, length)) < 0)
        return call_converter(n, value);
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, size);
    if (bytes == NULL)
        return NULL;
    if (base64_decode(text, length, (uint8_t *)PyBytes_AS_STRING(bytes)) < 0) {
        Py_DECREF(bytes);
        return call_converter(n, value);
    }
    return bytes;
}

/* Epoch counts: an int that fits 64 bits natively; anything else (a float, a bool, a huge int) as Python does. */
static PyObject *moment_of(const JsonNode *n, PyObject *value)
{
    if (!PyLong_CheckExact(value))
        return call_converter(n, value);
    int overflow;
    long long count = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)
        return call_converter(n, value);
    switch (n->kind) {
    case J_DATE:
        return date_value(count);
    case J_TIMESTAMP_MS:
        return timestamp_value(C_TIMESTAMP_MS, count);
    case J_TIMESTAMP_US:
        return timestamp_value(C_TIMESTAMP_US, count);
    default:
        return timestamp_value(C_TIMESTAMP_NS, count);
    }
}

/* Whether a plain field's value has its type exactly (an int within the node's bits): then it is kept as
   it is. Anything else goes to the Python check, which names it. */
static bool is_plain_value(const JsonNode *n, PyObject *value)
{
    switch (n->kind) {
    case J_STRING:
        return PyUnicode_CheckExact(value);
    case J_BOOLEAN:
        return PyBool_Check(value);
    case J_INTEGER: {
        if (!PyLong_CheckExact(value))
            return false;
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        return !overflow && number >= n->low && number <= n->high;  /* no error: value is an int */
    }
    default:
        return false;
    }
}

/* StructConverter's placeholder test: row[name] == form (str, or a one-item list of it). */
static int is_placeholder(const JsonField *field, PyObject *value)
{
    if (field->form_is_list) {
        if (!PyList_CheckExact(value) || PyList_GET_SIZE(value) != 1)
            return 0;
        value = PyList_GET_ITEM(value, 0);
    }
    if (!PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) != PyUnicode_GET_LENGTH(field->form))
        return 0;
    return PyUnicode_Compare(value, field->form) == 0 ? 1 : (PyErr_Occurred() ? -1 : 0);
}

/* StructConverter.__call__ on a dict: placeholders replaced by UNAVAILABLE, the other present values
   converted, in place; a field with a converter missing from the row is an error (KeyError). */
static int convert_struct(const JsonNode *n, PyObject *row, PyObject *unavailable)
{
    for (Py_ssize_t i = 0; i < n->count; i++) {
        const JsonField *field = &n->fields[i];
        PyObject *value = PyDict_GetItemWithError(row, field->name);
        if (value == NULL) {
            if (PyErr_Occurred())
                return -1;
            if (field->node != NULL) {
                PyErr_SetObject(PyExc_KeyError, field->name);
                return -1;
            }
            continue;
        }
        int placeholder = is_placeholder(field, value);
        if (placeholder != 0) {
            if (placeholder < 0 || PyDict_SetItem(row, field->name, unavailable) < 0)
                return -1;
            continue;
        }
        if (field->node == NULL || value == Py_None || is_plain_value(field->node, value))
            continue;  /* the common plain field: checked without a call */
        Py_INCREF(value);
        PyObject *converted = convert_value(field->node, value, unavailable);
        int stored = converted == NULL ? -1 : converted == value ? 0 : PyDict_SetItem(row, field->name, converted);
        Py_DECREF(value);
        Py_XDECREF(converted);
        if (stored < 0)
            return -1;
    }
    return 0;
}

/* array_converter: a new list, None items kept. */
static PyObject *convert_array(const JsonNode *n, PyObject *items, PyObject *unavailable)
{
    Py_ssize_t count = PyList_GET_SIZE(items);
    PyObject *converted = PyList_New(count);
    if (converted == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (i >= PyList_GET_SIZE(items)) {  /* a converter shortened it: let Python tell */
            Py_DECREF(converted);
            PyErr_SetString(PyExc_RuntimeError, "list changed size during conversion");
            return NULL;
        }
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, i));
        PyObject *value = item == Py_None ? Py_NewRef(Py_None) : convert_value(n->item, item, unavailable);
        Py_DECREF(item);
        if (value == NULL) {
            Py_DECREF(converted);
            return NULL;
        }
        PyList_SET_ITEM(converted, i, value);
    }
    return converted;
}

/* One non-None value through its node: a new reference. */
static PyObject *convert_value(const JsonNode *n, PyObject *value, PyObject *unavailable)
{
    switch (n->kind) {
    case J_CALL:
        return call_converter(n, value);
    case J_DECIMAL:
        return decimal_of(n, value);
    case J_TIMESTAMP_MS:
    case J_TIMESTAMP_US:
    case J_TIMESTAMP_NS:
    case J_DATE:
        return moment_of(n, value);
    case J_ZONED_TIMESTAMP:
        return PyUnicode_CheckExact(value) ? zoned_timestamp(n->converter, value) : call_converter(n, value);
    case J_DOUBLE:
        return PyFloat_CheckExact(value) ? Py_NewRef(value) : call_converter(n, value);
    case J_INTEGER:
    case J_STRING:
    case J_BOOLEAN:
        return is_plain_value(n, value) ? Py_NewRef(value) : call_converter(n, value);
    case J_BYTES:
        return bytes_of(n, value);
    case J_STRUCT: {
        if (!PyDict_CheckExact(value))
            return call_converter(n, value);
        if (Py_EnterRecursiveCall(" in a JSON struct") < 0)
            return NULL;
        int converted = convert_struct(n, value, unavailable);
        Py_LeaveRecursiveCall();
        return converted < 0 ? NULL : Py_NewRef(value);
    }
    case J_ARRAY:
        return PyList_CheckExact(value) ? convert_array(n, value, unavailable) : call_converter(n, value);
    }
    PyErr_SetString(PyExc_SystemError, "unknown JSON node kind");
    return NULL;
}

/* ------------------------------------------------------------------------ change events */

/* EnvelopeCodec._row: None and rows without a converter stay as they are. */
static PyObject *row_of(const JsonNode *n, PyObject *row, PyObject *unavailable)
{
    if (row == NULL || row == Py_None || n == NULL)
        return slot_value(row);
    return convert_value(n, row, unavailable);
}

/* source_from: a dict's fields into a Source (missing ones are None). */
static PyObject *source_of(const EventShape *shape, PyObject *raw)
{
    if (raw == NULL || raw == Py_None)
        return Py_NewRef(Py_None);
    if (!PyDict_CheckExact(raw))
        return value_error("source is not a struct");
    PyObject *slots[SOURCE_SLOTS];
    for (int i = 0; i < SOURCE_SLOTS; i++) {
        slots[i] = PyDict_GetItemWithError(raw, SOURCE_KEYS[i]);  /* borrowed, as source_instance takes them */
        if (slots[i] == NULL && PyErr_Occurred())
            return NULL;
    }
    return source_instance(shape, slots);
}

typedef struct {
    PyObject_HEAD
    JsonNode *root;        /* convert() */
    JsonNode *before, *after;  /* event(): the envelope's row nodes (NULL: rows stay as parsed) */
    bool envelope;
    PyObject *unavailable;
    EventShape *shape;
} Program;

/* EnvelopeCodec.event of a change event. None when the payload is not a dict or has no op (a transaction
   marker, or an error the Python path names): nothing has been converted then. */
static PyObject *change_event(Program *self, PyObject *payload, PyObject *const *record)
{
    if (self->unavailable == NULL)
        return cleared_error("Program");
    if (!PyDict_CheckExact(payload))
        Py_RETURN_NONE;
    PyObject *slots[ENVELOPE_SLOTS];
    for (int i = 0; i < ENVELOPE_SLOTS; i++) {
        slots[i] = PyDict_GetItemWithError(payload, ENVELOPE_KEYS[i]);
        if (slots[i] == NULL && PyErr_Occurred())
            return NULL;
        Py_XINCREF(slots[i]);  /* converters run Python code: hold what the payload holds */
    }
    PyObject *event = NULL, *op = NULL, *before = NULL, *after = NULL, *source = NULL, *ts_us = NULL;
    if (slots[E_OP] == NULL || slots[E_OP] == Py_None) {
        event = Py_NewRef(Py_None);
        goto done;
    }
    if ((op = member_of(self->shape->ops, slots[E_OP], "op")) == NULL
        || (before = row_of(self->before, slots[E_BEFORE], self->unavailable)) == NULL
        || (after = row_of(self->after, slots[E_AFTER], self->unavailable)) == NULL
        || (source = source_of(self->shape, slots[E_SOURCE])) == NULL
        || (ts_us = micros_of(slots[E_TS_US], slots[E_TS_MS])) == NULL)
        goto done;
    PyObject *values[EVENT_ATTRIBUTE_COUNT] = {
        Py_NewRef(record[0]), Py_NewRef(record[3]), Py_NewRef(record[4]), op, Py_NewRef(record[1]), before, after,
        source, Py_NewRef(record[2]), Py_NewRef(Py_False), Py_NewRef(Py_None), slot_value(slots[E_TRANSACTION]),
        Py_NewRef(Py_True), ts_us};
    op = before = after = source = ts_us = NULL;  /* the instance owns them now */
    event = dataclass_instance(self->shape->event_type, self->shape->event_members, values, EVENT_ATTRIBUTE_COUNT);
done:
    Py_XDECREF(op);
    Py_XDECREF(before);
    Py_XDECREF(after);
    Py_XDECREF(source);
    Py_XDECREF(ts_us);
    for (int i = 0; i < ENVELOPE_SLOTS; i++)
        Py_XDECREF(slots[i]);
    return event;
}

/* -------------------------------------------------------------------- building a program */

static const struct {
    const char *tag;
    JsonKind kind;
    Py_ssize_t arity;
} KINDS[] = {
    {"call", J_CALL, 2}, {"decimal", J_DECIMAL, 4}, {"timestamp_ms", J_TIMESTAMP_MS, 2},
    {"timestamp_us", J_TIMESTAMP_US, 2}, {"timestamp_ns", J_TIMESTAMP_NS, 2}, {"date", J_DATE, 2},
    {"zoned_timestamp", J_ZONED_TIMESTAMP, 2}, {"double", J_DOUBLE, 2}, {"bytes", J_BYTES, 2},
    {"struct", J_STRUCT, 3}, {"array", J_ARRAY, 3}, {"integer", J_INTEGER, 3}, {"string", J_STRING, 2},
    {"boolean", J_BOOLEAN, 2},
};

static int bad_description(PyObject *description, const char *expected)
{
    PyErr_Format(PyExc_ValueError, "bad JSON program description %.200R: expected %s", description, expected);
    return -1;
}

static void node_free(JsonNode *n)
{
    if (n == NULL)
        return;
    if (n->fields != NULL) {
        for (Py_ssize_t i = 0; i < n->count; i++) {
            Py_XDECREF(n->fields[i].name);
            node_free(n->fields[i].node);
            Py_XDECREF(n->fields[i].form);
        }
        PyMem_Free(n->fields);
    }
    node_free(n->item);
    Py_XDECREF(n->converter);
    PyMem_Free(n);
}

/* The Python objects of a node tree, for the collector. */
static int node_traverse(const JsonNode *n, visitproc visit, void *arg)
{
    if (n == NULL)
        return 0;
    Py_VISIT(n->converter);
    for (Py_ssize_t i = 0; n->fields != NULL && i < n->count; i++) {
        Py_VISIT(n->fields[i].name);
        Py_VISIT(n->fields[i].form);
        int visited = node_traverse(n->fields[i].node, visit, arg);
        if (visited != 0)
            return visited;
    }
    return node_traverse(n->item, visit, arg);
}

static int node_build(PyObject *description, int depth, JsonNode **out);

static int build_form(JsonField *field, PyObject *form)
{
    if (PyList_CheckExact(form) && PyList_GET_SIZE(form) == 1) {
        field->form_is_list = true;
        form = PyList_GET_ITEM(form, 0);
    }
    if (!PyUnicode_CheckExact(form))
        return bad_description(form, "a str placeholder form or a one-item list of one");
    field->form = Py_NewRef(form);
    return 0;
}

static int build_struct(JsonNode *n, PyObject *fields, int depth)
{
    if (!PyTuple_Check(fields))
        return bad_description(fields, "a tuple of struct fields");
    n->count = PyTuple_GET_SIZE(fields);
    n->fields = allocate(n->count, sizeof(JsonField));
    if (n->fields == NULL) {
        n->count = 0;
        return -1;
    }
    for (Py_ssize_t i = 0; i < n->count; i++) {
        PyObject *field = PyTuple_GET_ITEM(fields, i);
        if (!PyTuple_Check(field) || PyTuple_GET_SIZE(field) != 3 || !PyUnicode_CheckExact(PyTuple_GET_ITEM(field, 0)))
            return bad_description(field, "a (name, node, form) field");
        n->fields[i].name = Py_NewRef(PyTuple_GET_ITEM(field, 0));
        PyUnicode_InternInPlace(&n->fields[i].name);
        if (node_build(PyTuple_GET_ITEM(field, 1), depth + 1, &n->fields[i].node) < 0
            || build_form(&n->fields[i], PyTuple_GET_ITEM(field, 2)) < 0)
            return -1;
        for (Py_ssize_t j = 0; j < i; j++)  /* StructConverter keeps one entry per name: refuse duplicates */
            if (PyUnicode_Compare(n->fields[j].name, n->fields[i].name) == 0)
                return bad_description(field, "field names that are unique in their struct");
    }
    return 0;
}

/* ("integer", bits, converter): bits 8, 16, 32 or 64. */
static int integer_range_build(JsonNode *n, PyObject *description)
{
    long bits = PyLong_AsLong(PyTuple_GET_ITEM(description, 1));
    if (bits == -1 && PyErr_Occurred())
        return -1;
    if (bits != 8 && bits != 16 && bits != 32 && bits != 64)
        return bad_description(description, "integer bits of 8, 16, 32 or 64");
    n->high = bits == 64 ? INT64_MAX : (1LL << (bits - 1)) - 1;
    n->low = -n->high - 1;
    return 0;
}

/* *out: the node of a description, NULL for None (no converter). */
static int node_build(PyObject *description, int depth, JsonNode **out)
{
    *out = NULL;
    if (description == Py_None)
        return 0;
    if (depth > MAX_DEPTH)
        return bad_description(description, "a schema nested less deeply");
    const char *tag = tag_of(description);
    if (tag == NULL)
        return PyErr_Occurred() ? -1 : bad_description(description, "None or a tuple starting with a node kind");
    for (size_t k = 0; k < sizeof(KINDS) / sizeof(KINDS[0]); k++) {
        if (strcmp(tag, KINDS[k].tag) != 0)
            continue;
        Py_ssize_t arity = PyTuple_GET_SIZE(description);
        if (arity != KINDS[k].arity)
            return bad_description(description, "the number of items its kind takes");
        PyObject *converter = PyTuple_GET_ITEM(description, arity - 1);
        if (!PyCallable_Check(converter))
            return bad_description(description, "a callable converter as its last item");
        JsonNode *n = allocate(1, sizeof(JsonNode));
        if (n == NULL)
            return -1;
        *out = n;
        n->kind = KINDS[k].kind;
        n->converter = Py_NewRef(converter);
        if (n->kind == J_DECIMAL)
            return decimal_spec_build(&n->decimal, PyTuple_GET_ITEM(description, 1), PyTuple_GET_ITEM(description, 2));
        if (n->kind == J_INTEGER)
            return integer_range_build(n, description);
        if (n->kind == J_STRUCT)
            return build_struct(n, PyTuple_GET_ITEM(description, 1), depth);
        if (n->kind == J_ARRAY) {
            if (node_build(PyTuple_GET_ITEM(description, 1), depth + 1, &n->item) < 0)
                return -1;
            return n->item == NULL ? bad_description(description, "an array of items with a converter") : 0;
        }
        return 0;
    }
    return bad_description(description, "a known node kind");
}

/* ------------------------------------------------------------------------ Program type */

static PyObject *Program_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"description", "unavailable", "event_types", NULL};
    PyObject *description, *unavailable, *event_types = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|O:Program", keywords, &description, &unavailable, &event_types))
        return NULL;
    Program *self = (Program *)gc_object_new(type, sizeof(Program));
    if (self == NULL)
        return NULL;
    self->unavailable = Py_NewRef(unavailable);
    const char *tag = tag_of(description);
    int built;
    if (tag != NULL && strcmp(tag, "envelope") == 0) {
        self->envelope = true;
        if (PyTuple_GET_SIZE(description) != 3)
            built = bad_description(description, "(\"envelope\", before, after)");
        else if (event_types == Py_None)
            built = bad_description(description, "event_types for an envelope");
        else
            built = node_build(PyTuple_GET_ITEM(description, 1), 1, &self->before) < 0
                            || node_build(PyTuple_GET_ITEM(description, 2), 1, &self->after) < 0
                            || (self->shape = shape_build(event_types)) == NULL ? -1 : 0;
    } else {
        PyErr_Clear();
        built = node_build(description, 0, &self->root);
    }
    if (built < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return gc_object_ready((PyObject *)self);
}

static int Program_traverse(Program *self, visitproc visit, void *arg)
{
    Py_VISIT(self->unavailable);
    int visited = node_traverse(self->root, visit, arg);
    if (visited == 0)
        visited = node_traverse(self->before, visit, arg);
    if (visited == 0)
        visited = node_traverse(self->after, visit, arg);
    return visited != 0 ? visited : shape_traverse(self->shape, visit, arg);
}

/* Converters may hold what holds this Program (decoder.py's compiled schema): a cycle. Everything is
   detached first, then released, so no Python code run by a release sees a half-freed tree. */
static int Program_clear(Program *self)
{
    JsonNode *root = self->root, *before = self->before, *after = self->after;
    EventShape *shape = self->shape;
    self->root = self->before = self->after = NULL;
    self->shape = NULL;
    node_free(root);
    node_free(before);
    node_free(after);
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

static PyObject *Program_convert(Program *self, PyObject *value)
{
    if (self->unavailable == NULL)
        return cleared_error("Program");
    if (self->envelope) {
        PyErr_SetString(PyExc_TypeError, "convert() needs a Program of a value, not of an envelope");
        return NULL;
    }
    if (value == Py_None || self->root == NULL)
        return Py_NewRef(value);
    return convert_value(self->root, value, self->unavailable);
}

static PyObject *Program_event(Program *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->envelope) {
        PyErr_SetString(PyExc_TypeError, "event() needs a Program of an envelope");
        return NULL;
    }
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "event() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    return change_event(self, args[0], args + 1);
}

static PyMethodDef Program_methods[] = {
    {"convert", (PyCFunction)Program_convert, METH_O,
     "convert(value) -> the value converted (a struct dict in place), as the schema's Python converter would."},
    {"event", (PyCFunction)(void (*)(void))Program_event, METH_FASTCALL,
     "event(payload, topic, key, headers, partition, offset) -> the ChangeEvent of a change envelope, as\n"
     "EnvelopeCodec.event builds it; None (nothing converted) when the payload is not a dict with an op."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc_consumer._json_native.Program",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Program_traverse,
    .tp_clear = (inquiry)Program_clear,
    .tp_doc = "Program(description, unavailable, event_types=None): one Connect schema compiled.\n\n"
              "event_types: (ChangeEvent, Source, {wire op: Op}, {wire snapshot: Snapshot}) for an envelope.",
    .tp_new = Program_new,
    .tp_dealloc = (destructor)Program_dealloc,
    .tp_methods = Program_methods,
};

/* --------------------------------------------------------------- KnownSchemas: one call per record */

/* Decoder.decode's common case in one C call: key and value are `{"schema":S,"payload":P}` with an S
   seen before (the schema texts decoder.py registered, matched byte for byte exactly as its
   _known_schema does), P parsed by orjson and converted here. Anything else — a new or NUMERIC schema,
   a tombstone, a transaction marker, a value that fails — returns None or raises, and decoder.py takes
   its Python-level path for the whole record. */

#define SCHEMA_PREFIX "{\"schema\":"
#define PAYLOAD_SEPARATOR ",\"payload\":"

typedef struct {
    PyObject *text;   /* bytes */
    Program *key;     /* the schema's Program of a value (for keys), or NULL */
    Program *event;   /* its Program of an envelope, or NULL */
} KnownSchema;

typedef struct {
    PyObject_HEAD
    KnownSchema *schemas;
    Py_ssize_t count, capacity;
    PyObject *loads;       /* orjson.loads */
    PyObject *header_map;  /* debezium.header_map */
} KnownSchemas;

/* Forgets every schema; the count is zeroed before any release can run Python code. */
static void known_clear(KnownSchemas *self)
{
    Py_ssize_t count = self->count;
    self->count = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_XDECREF(self->schemas[i].text);
        Py_XDECREF(self->schemas[i].key);
        Py_XDECREF(self->schemas[i].event);
    }
}

static PyObject *KnownSchemas_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"loads", "header_map", NULL};
    PyObject *loads, *header_map;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:KnownSchemas", keywords, &loads, &header_map))
        return NULL;
    if (!PyCallable_Check(loads) || !PyCallable_Check(header_map)) {
        PyErr_SetString(PyExc_TypeError, "KnownSchemas(loads, header_map) takes two callables");
        return NULL;
    }
    KnownSchemas *self = (KnownSchemas *)gc_object_new(type, sizeof(KnownSchemas));
    if (self == NULL)
        return NULL;
    self->loads = Py_NewRef(loads);
    self->header_map = Py_NewRef(header_map);
    return gc_object_ready((PyObject *)self);
}

static int KnownSchemas_traverse(KnownSchemas *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Py_VISIT(self->schemas[i].text);
        Py_VISIT(self->schemas[i].key);
        Py_VISIT(self->schemas[i].event);
    }
    Py_VISIT(self->loads);
    Py_VISIT(self->header_map);
    return 0;
}

/* header_map and loads may be methods of what holds this (the Decoder): a cycle. */
static int KnownSchemas_gc_clear(KnownSchemas *self)
{
    known_clear(self);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->header_map);
    return 0;
}

static void KnownSchemas_dealloc(KnownSchemas *self)
{
    PyObject_GC_UnTrack(self);
    KnownSchemas_gc_clear(self);
    PyMem_Free(self->schemas);
    PyObject_GC_Del(self);
}

static Program *program_or_null(PyObject *object, bool envelope)
{
    if (object == Py_None)
        return NULL;
    if (!Py_IS_TYPE(object, &ProgramType) || ((Program *)object)->envelope != envelope) {
        PyErr_SetString(PyExc_TypeError, "expected a Program (of a value for keys, of an envelope for events) or None");
        return (Program *)Py_None;  /* an error marker, never used as a Program */
    }
    return (Program *)Py_NewRef(object);
}

static PyObject *KnownSchemas_add(KnownSchemas *self, PyObject *args)
{
    PyObject *text, *key, *event;
    if (!PyArg_ParseTuple(args, "O!OO:add", &PyBytes_Type, &text, &key, &event))
        return NULL;
    Program *key_program = program_or_null(key, false);
    if (key_program == (Program *)Py_None)
        return NULL;
    Program *event_program = program_or_null(event, true);
    if (event_program == (Program *)Py_None) {
        Py_XDECREF(key_program);
        return NULL;
    }
    if (self->count == self->capacity) {
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 8;
        KnownSchema *grown = PyMem_Realloc(self->schemas, (size_t)capacity * sizeof(KnownSchema));
        if (grown == NULL) {
            Py_XDECREF(key_program);
            Py_XDECREF(event_program);
            return PyErr_NoMemory();
        }
        self->schemas = grown;
        self->capacity = capacity;
    }
    self->schemas[self->count++] = (KnownSchema){Py_NewRef(text), key_program, event_program};
    Py_RETURN_NONE;
}

static PyObject *KnownSchemas_discard(KnownSchemas *self, PyObject *text)
{
    if (!PyBytes_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "discard() takes the schema's bytes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < self->count; i++) {
        KnownSchema *known = &self->schemas[i];
        if (PyBytes_GET_SIZE(known->text) != PyBytes_GET_SIZE(text)
            || memcmp(PyBytes_AS_STRING(known->text), PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)) != 0)
            continue;
        Py_DECREF(known->text);
        Py_XDECREF(known->key);
        Py_XDECREF(known->event);
        self->schemas[i--] = self->schemas[--self->count];
    }
    Py_RETURN_NONE;
}

static PyObject *KnownSchemas_clear(KnownSchemas *self, PyObject *Py_UNUSED(ignored))
{
    known_clear(self);
    Py_RETURN_NONE;
}

/* The known schema `data` starts with, and where its payload text starts; NULL if none. */
static const KnownSchema *known_schema(const KnownSchemas *self, PyObject *data, Py_ssize_t *payload_start)
{
    const char *bytes = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    const Py_ssize_t prefix = sizeof(SCHEMA_PREFIX) - 1, separator = sizeof(PAYLOAD_SEPARATOR) - 1;
    if (size < prefix || memcmp(bytes, SCHEMA_PREFIX, prefix) != 0 || bytes[size - 1] != '}')
        return NULL;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        const KnownSchema *known = &self->schemas[i];
        Py_ssize_t length = PyBytes_GET_SIZE(known->text), cut = prefix + length;
        if (cut + separator <= size && memcmp(bytes + cut, PAYLOAD_SEPARATOR, separator) == 0
            && memcmp(bytes + prefix, PyBytes_AS_STRING(known->text), length) == 0) {
            *payload_start = cut + separator;
            return known;
        }
    }
    return NULL;
}

/* orjson.loads of data[start:-1] (the payload, before the document's closing brace). */
static PyObject *parse_payload(const KnownSchemas *self, PyObject *data, Py_ssize_t start)
{
    Py_ssize_t length = PyBytes_GET_SIZE(data) - 1 - start;
    if (length < 0)
        return value_error("no payload");
    PyObject *text = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + start, length);
    if (text == NULL)
        return NULL;
    PyObject *payload = PyObject_CallOneArg(self->loads, text);
    Py_DECREF(text);
    return payload;
}

/* Decoder.decode_key of a key with a known schema: a dict, or None when key is None. *handled = false
   (nothing set) when the Python path has to decode it. */
static PyObject *known_key(const KnownSchemas *self, PyObject *key, bool *handled)
{
    *handled = true;
    if (key == Py_None)
        return Py_NewRef(Py_None);
    Py_ssize_t start;
    const KnownSchema *known = PyBytes_CheckExact(key) ? known_schema(self, key, &start) : NULL;
    if (known == NULL || known->key == NULL || known->key->root == NULL) {
        *handled = false;
        return NULL;
    }
    Program *program = (Program *)Py_NewRef(known->key);  /* a converter could call back into discard() */
    PyObject *payload = parse_payload(self, key, start), *converted = NULL;
    if (payload != NULL && payload != Py_None)
        converted = convert_value(program->root, payload, program->unavailable);
    else if (payload == Py_None)
        converted = Py_NewRef(Py_None);
    Py_XDECREF(payload);
    Py_DECREF(program);
    if (converted != NULL && converted != Py_None && !PyDict_CheckExact(converted)) {
        Py_DECREF(converted);
        *handled = false;
        return NULL;
    }
    return converted;
}

static PyObject *KnownSchemas_decode(KnownSchemas *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "decode() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (self->loads == NULL || self->header_map == NULL)
        return cleared_error("KnownSchemas");
    PyObject *topic = args[0], *key = args[1], *value = args[2], *headers = args[3];
    Py_ssize_t start;
    const KnownSchema *known = PyBytes_CheckExact(value) ? known_schema(self, value, &start) : NULL;
    if (known == NULL || known->event == NULL)
        Py_RETURN_NONE;
    Program *program = (Program *)Py_NewRef(known->event);
    bool handled;
    PyObject *key_value = known_key(self, key, &handled), *header_dict = NULL, *payload = NULL, *event = NULL;
    if (!handled) {
        event = Py_NewRef(Py_None);
        goto done;
    }
    if (key_value == NULL
        || (header_dict = headers == Py_None ? PyDict_New() : PyObject_CallOneArg(self->header_map, headers)) == NULL
        || (payload = parse_payload(self, value, start)) == NULL)
        goto done;
    if (payload == Py_None) {  /* a null payload: the Python path makes it a tombstone */
        event = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *record[5] = {topic, key_value, header_dict, args[4], args[5]};
    event = change_event(program, payload, record);
done:
    Py_DECREF(program);
    Py_XDECREF(key_value);
    Py_XDECREF(header_dict);
    Py_XDECREF(payload);
    return event;
}

static PyMethodDef KnownSchemas_methods[] = {
    {"add", (PyCFunction)KnownSchemas_add, METH_VARARGS,
     "add(text, key_program, event_program): a schema's wire text and its Programs (either may be None)."},
    {"discard", (PyCFunction)KnownSchemas_discard, METH_O, "discard(text): forget a schema."},
    {"clear", (PyCFunction)KnownSchemas_clear, METH_NOARGS, "clear(): forget every schema."},
    {"decode", (PyCFunction)(void (*)(void))KnownSchemas_decode, METH_FASTCALL,
     "decode(topic, key, value, headers, partition, offset) -> the ChangeEvent, as Decoder.decode returns it;\n"
     "None when the Python path has to decode this record (then nothing it will parse was touched)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KnownSchemasType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cdc_consumer._json_native.KnownSchemas",
    .tp_basicsize = sizeof(KnownSchemas),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)KnownSchemas_traverse,
    .tp_clear = (inquiry)KnownSchemas_gc_clear,
    .tp_doc = "KnownSchemas(loads, header_map): schema texts seen on the wire and their Programs.",
    .tp_new = KnownSchemas_new,
    .tp_dealloc = (destructor)KnownSchemas_dealloc,
    .tp_methods = KnownSchemas_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cdc_consumer._json_native",
    .m_doc = "Parsed Debezium JSON payloads to cdc_consumer.decoder's values (see the comment atop _json_native.c).",
    .m_size = -1,
};

static int intern_keys(PyObject **keys, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if ((keys[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__json_native(void)
{
    base64_table_init();
    if (native_common_init() < 0 || PyType_Ready(&ProgramType) < 0 || PyType_Ready(&KnownSchemasType) < 0
        || intern_keys(ENVELOPE_KEYS, ENVELOPE_FIELDS, ENVELOPE_SLOTS) < 0
        || intern_keys(SOURCE_KEYS, SOURCE_FIELDS, SOURCE_SLOTS) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL || PyModule_AddObjectRef(m, "Program", (PyObject *)&ProgramType) < 0
        || PyModule_AddObjectRef(m, "KnownSchemas", (PyObject *)&KnownSchemasType) < 0
        || add_names(m, "EVENT_ATTRIBUTES", EVENT_ATTRIBUTES, EVENT_ATTRIBUTE_COUNT) < 0
        || add_names(m, "SOURCE_ATTRIBUTES", SOURCE_ATTRIBUTES, SOURCE_ATTRIBUTE_COUNT) < 0) {
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
