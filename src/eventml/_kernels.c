/* Compiled loops for the places where numpy needs many passes over memory for what is one
 * pass row by row (written by hand: no well-kept library reads MessagePack maps or Python
 * dicts straight into a matrix, or walks PMML's trees with JPMML's comparisons).
 *
 * read_maps   every record's encoded feature map against one known layout, values read
 *             into a matrix; any map that differs from the layout outside its value bytes
 *             stops the read (the caller then decodes the batch exactly).
 * read_dicts  the same for a list of plain dicts: same keys in the same order, every value
 *             a float.
 * walk_trees  every (tree, row) pair down binary chains of numeric comparisons.
 * sum_rows    per row, the (weighted) sum of one table row per segment: a forest's leaf
 *             probabilities averaged without the [trees, rows, classes] array between.
 *
 * Every function checks what it is given before it reads: formats, sizes (without
 * overflow), alignment, and every index it will follow. Small index arrays are copied
 * first and the copies checked, so neither an output that overlaps them nor another thread
 * (the tree walk and the sums run without the GIL) can change an index after its check;
 * the large index of sum_rows is checked where it is read. A wrong call raises ValueError
 * instead of reading or writing out of bounds (tests/models/test_kernels.py). The eventml
 * modules that call them (models/_rows.py, models/formats/_pmml/_binary.py and _mining.py)
 * document the layouts.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__)
/* sums must round step by step like numpy's (gcc and clang: -ffp-contract=off, setup.py) */
#pragma STDC FP_CONTRACT OFF
#endif

/* a * b into *out, or ValueError if either is negative or the product overflows */
static int
product(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out, const char *what)
{
    if (a < 0 || b < 0 || (b != 0 && a > PY_SSIZE_T_MAX / b)) {
        PyErr_Format(PyExc_ValueError, "expected sizes that fit in memory for %s, got %zd x %zd",
                     what, a, b);
        return -1;
    }
    *out = a * b;
    return 0;
}

/* The struct format of a buffer without a byte-order prefix that means this machine's. */
static const char *
native_format(const Py_buffer *view)
{
    const char *f = view->format ? view->format : "B";
#if PY_LITTLE_ENDIAN
    if (f[0] == '<') {
        return f + 1;
    }
#else
    if (f[0] == '>' || f[0] == '!') {
        return f + 1;
    }
#endif
    return (f[0] == '@' || f[0] == '=') ? f + 1 : f;
}

/* Acquire `obj` as C-contiguous, aligned items of `format` ("q" int64, "d" float64, or
 * "df": float64 or float32, *single set for float32); `count` items unless count < 0. */
static int
take_buffer(PyObject *obj, Py_buffer *view, const char *name, const char *format,
            Py_ssize_t count, int writable, int *single)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    const char *got = native_format(view);
    int same;
    if (strcmp(format, "q") == 0) {
        same = (strcmp(got, "q") == 0 || strcmp(got, "l") == 0) && view->itemsize == 8;
    }
    else if (strcmp(format, "df") == 0) {
        *single = strcmp(got, "f") == 0 && view->itemsize == 4;
        same = *single || (strcmp(got, "d") == 0 && view->itemsize == 8);
    }
    else {
        same = strcmp(got, format) == 0 && view->itemsize == 8;
    }
    Py_ssize_t size = 0;
    if (same && count >= 0 && product(count, view->itemsize, &size, name) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    const char *type = strcmp(format, "q") == 0   ? "int64"
                       : strcmp(format, "d") == 0 ? "float64"
                                                  : "float64 or float32";
    if (!same || (count >= 0 && view->len != size)) {
        if (count >= 0) {
            PyErr_Format(PyExc_ValueError, "expected %s as %zd %s items, got %zd bytes of "
                         "format '%s'", name, count, type, view->len,
                         view->format ? view->format : "B");
        }
        else {
            PyErr_Format(PyExc_ValueError, "expected %s as %s items, got format '%s'", name,
                         type, view->format ? view->format : "B");
        }
        PyBuffer_Release(view);
        return -1;
    }
    if ((uintptr_t)view->buf % (uintptr_t)view->itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "expected %s aligned to its %zd-byte items", name,
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A private copy of an int64 buffer (count items, or any number if count < 0): checked
 * once, it cannot change afterwards. Returns NULL with an exception set on failure. */
static int64_t *
copy_int64(PyObject *obj, const char *name, Py_ssize_t count, Py_ssize_t *got)
{
    Py_buffer view;
    if (take_buffer(obj, &view, name, "q", count, 0, NULL) < 0) {
        return NULL;
    }
    *got = view.len / 8;
    int64_t *copy = PyMem_Malloc(view.len ? (size_t)view.len : 1);
    if (copy == NULL) {
        PyErr_NoMemory();
    }
    else {
        memcpy(copy, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return copy;
}

static inline uint64_t
load_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline double
load_be_double(const unsigned char *p)
{
    uint64_t v;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&v, p, 8);
    v = __builtin_bswap64(v); /* one instruction */
#else
    v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
#endif
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* Whether `row` equals `signature` wherever `mask` is 0xFF (the value bytes are 0 in both
 * signature and mask), eight bytes at a time. */
static inline int
fits(const unsigned char *row, const unsigned char *signature, const unsigned char *mask,
     Py_ssize_t length)
{
    Py_ssize_t i = 0;
    for (; i + 8 <= length; i += 8) {
        if ((load_u64(row + i) & load_u64(mask + i)) != load_u64(signature + i)) {
            return 0;
        }
    }
    for (; i < length; i++) {
        if ((row[i] & mask[i]) != signature[i]) {
            return 0;
        }
    }
    return 1;
}

static inline void
store(void *out, int single, Py_ssize_t at, double value)
{
    if (single) {
        ((float *)out)[at] = (float)value;
    }
    else {
        ((double *)out)[at] = value;
    }
}

PyDoc_STRVAR(read_maps_doc,
"read_maps(raws, signature, mask, offsets, out) -> bool\n\n"
"Read one float64 per output column from every encoded map in `raws` (a list of bytes-like\n"
"objects; anything else raises TypeError) into `out` (float64 or float32, len(raws) *\n"
"len(offsets) items, row-major). A map must be as long as `signature` and equal it\n"
"wherever `mask` is 0xFF; `offsets` (int64) are where each column's eight big-endian\n"
"value bytes sit. False, and `out` partly written, as soon as a map does not fit.");

static PyObject *
read_maps(PyObject *self, PyObject *args)
{
    PyObject *list, *o_offsets, *o_out;
    Py_buffer sig, mask, out;
    if (!PyArg_ParseTuple(args, "O!y*y*OO:read_maps", &PyList_Type, &list, &sig, &mask,
                          &o_offsets, &o_out)) {
        return NULL;
    }
    PyObject *result = NULL, *raws = NULL;
    int64_t *offsets = NULL;
    int single = 0, have_out = 0;
    Py_ssize_t length = sig.len, width = 0, count = 0;
    if (mask.len != length) {
        PyErr_Format(PyExc_ValueError, "expected a mask of %zd bytes, got %zd", length,
                     mask.len);
        goto done;
    }
    offsets = copy_int64(o_offsets, "offsets", -1, &width);
    if (offsets == NULL) goto done;
    for (Py_ssize_t j = 0; j < width; j++) {
        if (offsets[j] < 0 || length < 8 || offsets[j] > length - 8) {
            PyErr_Format(PyExc_ValueError, "expected offsets within a map of %zd bytes, got %lld",
                         length, (long long)offsets[j]);
            goto done;
        }
    }
    /* a tuple of the items: their number and lifetimes cannot change while buffers of
     * other objects are acquired (which may run Python code) */
    raws = PyList_AsTuple(list);
    if (raws == NULL) goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(raws);
    if (product(n, width, &count, "out") < 0) goto done;
    if (take_buffer(o_out, &out, "out", "df", count, 1, &single) < 0) goto done;
    have_out = 1;
    const unsigned char *s = sig.buf, *m = mask.buf;
    int ok = 1;
    for (Py_ssize_t r = 0; r < n && ok; r++) {
        PyObject *item = PyTuple_GET_ITEM(raws, r);
        Py_buffer view;
        const unsigned char *row;
        int viewed = 0;
        Py_ssize_t size;
        if (PyBytes_CheckExact(item)) {
            row = (const unsigned char *)PyBytes_AS_STRING(item);
            size = PyBytes_GET_SIZE(item);
        }
        else {
            if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0) goto done;
            viewed = 1;
            row = view.buf;
            size = view.len;
        }
        if (size == length && fits(row, s, m, length)) {
            for (Py_ssize_t j = 0; j < width; j++) {
                store(out.buf, single, r * width + j, load_be_double(row + offsets[j]));
            }
        }
        else {
            ok = 0;
        }
        if (viewed) {
            PyBuffer_Release(&view);
        }
    }
    result = PyBool_FromLong(ok);
done:
    if (have_out) PyBuffer_Release(&out);
    Py_XDECREF(raws);
    PyMem_Free(offsets);
    PyBuffer_Release(&sig);
    PyBuffer_Release(&mask);
    return result;
}

PyDoc_STRVAR(read_dicts_doc,
"read_dicts(rows, keys, columns, width, out) -> bool\n\n"
"Read plain dicts (type exactly dict) whose keys are exactly `keys` (a tuple of str), in\n"
"that order, and whose values are all floats (type exactly float): the value of key i goes\n"
"to output column columns[i] (int64, below `width`; -1 skips it); `out` is float64 or\n"
"float32, len(rows) * width items, row-major. False, and `out` partly written, as soon as\n"
"a row does not fit.");

static PyObject *
read_dicts(PyObject *self, PyObject *args)
{
    PyObject *rows, *keys, *o_columns, *o_out;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "O!O!OnO:read_dicts", &PyList_Type, &rows, &PyTuple_Type,
                          &keys, &o_columns, &width, &o_out)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer out;
    int single = 0, have_out = 0;
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys), got = 0, count = 0;
    int64_t *columns = copy_int64(o_columns, "columns", nkeys, &got);
    if (columns == NULL) return NULL;
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_ValueError, "expected keys as a tuple of str");
            goto done;
        }
        if (columns[i] < -1 || columns[i] >= width) {
            PyErr_Format(PyExc_ValueError, "expected columns below %zd, got %lld", width,
                         (long long)columns[i]);
            goto done;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    if (product(n, width, &count, "out") < 0) goto done;
    if (take_buffer(o_out, &out, "out", "df", count, 1, &single) < 0) goto done;
    have_out = 1;
    /* acquiring out may run Python code; the loop below runs none (exact dicts, str and
     * floats), so the list keeps the length out was checked against from here on */
    if (PyList_GET_SIZE(rows) != n) {
        PyErr_SetString(PyExc_ValueError, "expected rows to stay as they were during the call");
        goto done;
    }
    int ok = 1;
    for (Py_ssize_t r = 0; r < n && ok; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyDict_CheckExact(row) || PyDict_GET_SIZE(row) != nkeys) {
            ok = 0;
            break;
        }
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        while (PyDict_Next(row, &pos, &key, &value)) {
            PyObject *want = PyTuple_GET_ITEM(keys, i);
            /* both exact str: the comparison cannot fail or run Python code */
            if ((key != want && (!PyUnicode_CheckExact(key) || PyUnicode_Compare(key, want))) ||
                !PyFloat_CheckExact(value)) {
                ok = 0;
                break;
            }
            if (columns[i] >= 0) {
                store(out.buf, single, r * width + columns[i], PyFloat_AS_DOUBLE(value));
            }
            i++;
        }
    }
    result = PyBool_FromLong(ok);
done:
    if (have_out) PyBuffer_Release(&out);
    PyMem_Free(columns);
    return result;
}

PyDoc_STRVAR(walk_trees_doc,
"walk_trees(roots, left, right, column, threshold, op, depth, matrix, width, out)\n\n"
"Walk every (tree, row) pair `depth` steps down binary chains and write the node reached\n"
"to out[tree * rows + row] (int64). Node i compares x = matrix[row * width + column[i]]\n"
"(float64, row-major, finite) with threshold[i]: the outcome is 0 (x < t), 1 (x == t) or\n"
"2 (x > t), and the walk goes to left[i] if bit `outcome` of op[i] is set, else right[i].\n"
"A leaf is a node whose left and right are itself. Index arrays are int64.");

#ifndef LANES
#define LANES 8 /* (tree, row) pairs walked together: their loads overlap in the CPU */
#endif

/* One node's fields side by side: a step reads one cache line, not five arrays. */
struct node {
    double threshold;
    int64_t left, right;
    int32_t column, op;
};

/* `lanes` rows (a constant LANES in the hot loop, so the nodes stay in registers). */
static inline void
walk_lanes(const struct node *table, int64_t root, const double *rows, Py_ssize_t width,
           Py_ssize_t depth, Py_ssize_t lanes, int64_t *out)
{
    int64_t node[LANES];
    for (Py_ssize_t k = 0; k < lanes; k++) {
        node[k] = root;
    }
    for (Py_ssize_t d = 0; d < depth; d++) {
        for (Py_ssize_t k = 0; k < lanes; k++) {
            const struct node *at = &table[node[k]];
            double x = rows[k * width + at->column];
            int64_t go = (at->op >> ((x >= at->threshold) + (x > at->threshold))) & 1;
            node[k] = at->right + go * (at->left - at->right); /* no branch to mispredict */
        }
    }
    for (Py_ssize_t k = 0; k < lanes; k++) {
        out[k] = node[k];
    }
}

static PyObject *
walk_trees(PyObject *self, PyObject *args)
{
    PyObject *o_roots, *o_left, *o_right, *o_column, *o_threshold, *o_op, *o_matrix, *o_out;
    Py_ssize_t depth, width;
    if (!PyArg_ParseTuple(args, "OOOOOOnOnO:walk_trees", &o_roots, &o_left, &o_right,
                          &o_column, &o_threshold, &o_op, &depth, &o_matrix, &width, &o_out)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t trees = 0, nodes = 0, got = 0, count = 0;
    int64_t *roots = NULL, *left = NULL, *right = NULL, *column = NULL, *op = NULL;
    struct node *table = NULL;
    Py_buffer b_threshold, b_matrix, b_out;
    int have_threshold = 0, have_matrix = 0, have_out = 0;
    if (width <= 0 || width > INT32_MAX || depth < 0) {
        PyErr_Format(PyExc_ValueError, "expected a matrix of rows of %zd values and depth %zd "
                     ">= 0", width, depth);
        return NULL;
    }
    if ((roots = copy_int64(o_roots, "roots", -1, &trees)) == NULL) goto done;
    if ((left = copy_int64(o_left, "left", -1, &nodes)) == NULL) goto done;
    if ((right = copy_int64(o_right, "right", nodes, &got)) == NULL) goto done;
    if ((column = copy_int64(o_column, "column", nodes, &got)) == NULL) goto done;
    if ((op = copy_int64(o_op, "op", nodes, &got)) == NULL) goto done;
    if (take_buffer(o_threshold, &b_threshold, "threshold", "d", nodes, 0, NULL) < 0) goto done;
    have_threshold = 1;
    if (take_buffer(o_matrix, &b_matrix, "matrix", "d", -1, 0, NULL) < 0) goto done;
    have_matrix = 1;
    if ((b_matrix.len / 8) % width != 0) {
        PyErr_Format(PyExc_ValueError, "expected a matrix of rows of %zd values and depth %zd "
                     ">= 0", width, depth);
        goto done;
    }
    Py_ssize_t n = b_matrix.len / 8 / width;
    if (product(trees, n, &count, "out") < 0) goto done;
    if (take_buffer(o_out, &b_out, "out", "q", count, 1, NULL) < 0) goto done;
    have_out = 1;
    for (Py_ssize_t i = 0; i < nodes; i++) {
        if (left[i] < 0 || left[i] >= nodes || right[i] < 0 || right[i] >= nodes ||
            column[i] < 0 || column[i] >= width || op[i] < 0 || op[i] > 7) {
            PyErr_Format(PyExc_ValueError, "node %zd links or reads outside the tables", i);
            goto done;
        }
    }
    for (Py_ssize_t t = 0; t < trees; t++) {
        if (roots[t] < 0 || roots[t] >= nodes) {
            PyErr_Format(PyExc_ValueError, "root %zd is not a node", t);
            goto done;
        }
    }
    table = PyMem_Malloc(nodes ? (size_t)nodes * sizeof(struct node) : 1);
    if (table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const double *threshold = b_threshold.buf;
    for (Py_ssize_t i = 0; i < nodes; i++) {
        table[i].threshold = threshold[i];
        table[i].left = left[i];
        table[i].right = right[i];
        table[i].column = (int32_t)column[i];
        table[i].op = (int32_t)op[i];
    }
    const double *matrix = b_matrix.buf;
    int64_t *out = b_out.buf;
    /* without the GIL: only the private copies are followed; the matrix and out are held */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t t = 0; t < trees; t++) {
        Py_ssize_t start = 0;
        for (; start + LANES <= n; start += LANES) {
            walk_lanes(table, roots[t], matrix + start * width, width, depth, LANES,
                       out + t * n + start);
        }
        if (start < n) {
            walk_lanes(table, roots[t], matrix + start * width, width, depth, n - start,
                       out + t * n + start);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (have_out) PyBuffer_Release(&b_out);
    if (have_matrix) PyBuffer_Release(&b_matrix);
    if (have_threshold) PyBuffer_Release(&b_threshold);
    PyMem_Free(table);
    PyMem_Free(roots);
    PyMem_Free(left);
    PyMem_Free(right);
    PyMem_Free(column);
    PyMem_Free(op);
    return result;
}

PyDoc_STRVAR(sum_rows_doc,
"sum_rows(table, width, index, weights, out)\n\n"
"For every column r of `index` (int64, [segments, n] row-major): out[r] = the sum over\n"
"segments s, in order, of weights[s] * table[index[s, r]] (rows of `width` float64; no\n"
"weights: 1). `weights` is float64 [segments] or None. Each term is one multiplication\n"
"added to the sum so far, which starts at 0.0 (never fused), so the result is bit for bit\n"
"numpy's (weights[:, None, None] * table[index]).sum(axis=0) whenever numpy adds the\n"
"segments in order, i.e. unless n * width == 1 (numpy then sums pairwise).");

static PyObject *
sum_rows(PyObject *self, PyObject *args)
{
    PyObject *o_table, *o_index, *o_weights, *o_out;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "OnOOO:sum_rows", &o_table, &width, &o_index, &o_weights,
                          &o_out)) {
        return NULL;
    }
    Py_buffer b_table, b_index, b_out, b_weights;
    const double *weights = NULL; /* values only: another thread may change them, harmlessly */
    int have_index = 0, have_out = 0, have_weights = 0;
    PyObject *result = NULL;
    if (width <= 0) {
        PyErr_Format(PyExc_ValueError, "expected a table of rows of %zd values", width);
        return NULL;
    }
    if (take_buffer(o_table, &b_table, "table", "d", -1, 0, NULL) < 0) return NULL;
    if ((b_table.len / 8) % width != 0) {
        PyErr_Format(PyExc_ValueError, "expected a table of rows of %zd values", width);
        goto done;
    }
    Py_ssize_t rows = b_table.len / 8 / width;
    if (take_buffer(o_index, &b_index, "index", "q", -1, 0, NULL) < 0) goto done;
    have_index = 1;
    if (take_buffer(o_out, &b_out, "out", "d", -1, 1, NULL) < 0) goto done;
    have_out = 1;
    Py_ssize_t n = b_out.len / 8 / width, segments = n ? b_index.len / 8 / n : 0;
    if (b_out.len != n * width * 8 || b_index.len != segments * n * 8) {
        PyErr_Format(PyExc_ValueError, "expected out as rows of %zd values and index as "
                     "[segments, rows of out]", width);
        goto done;
    }
    if (o_weights != Py_None) {
        if (take_buffer(o_weights, &b_weights, "weights", "d", segments, 0, NULL) < 0) goto done;
        have_weights = 1;
        weights = b_weights.buf;
    }
    const int64_t *index = b_index.buf;
    const double *table = b_table.buf;
    double *out = b_out.buf;
    Py_ssize_t bad = -1;
    /* without the GIL: each index is checked where it is read, so a change to it by
     * another thread can only give a wrong row, never one outside the table */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n * width; i++) {
        out[i] = 0.0; /* numpy's start: 0.0 + -0.0 is 0.0 */
    }
    for (Py_ssize_t s = 0; s < segments && bad < 0; s++) {
        const int64_t *at = index + s * n;
        double w = weights ? weights[s] : 1.0;
        for (Py_ssize_t r = 0; r < n; r++) {
            int64_t i = at[r];
            if (i < 0 || i >= rows) {
                bad = s * n + r;
                break;
            }
            const double *from = table + i * width;
            double *to = out + r * width;
            /* the same branch for a whole segment, so predicted; plain loops inside */
            if (weights) {
                for (Py_ssize_t j = 0; j < width; j++) to[j] += w * from[j];
            }
            else {
                for (Py_ssize_t j = 0; j < width; j++) to[j] += from[j];
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "index %lld (item %zd) is not a row of the table",
                     (long long)index[bad], bad);
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (have_out) PyBuffer_Release(&b_out);
    if (have_index) PyBuffer_Release(&b_index);
    if (have_weights) PyBuffer_Release(&b_weights);
    PyBuffer_Release(&b_table);
    return result;
}

static PyMethodDef methods[] = {
    {"read_maps", read_maps, METH_VARARGS, read_maps_doc},
    {"read_dicts", read_dicts, METH_VARARGS, read_dicts_doc},
    {"walk_trees", walk_trees, METH_VARARGS, walk_trees_doc},
    {"sum_rows", sum_rows, METH_VARARGS, sum_rows_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "eventml._kernels",
    "Compiled loops: feature maps and dicts into a matrix, tree walks, forest sums "
    "(see _kernels.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
