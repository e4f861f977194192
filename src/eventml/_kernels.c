/* Compiled loops for the two places where numpy needs many passes over memory for what is
 * one pass row by row (written by hand: no well-kept library reads MessagePack maps or
 * Python dicts straight into a matrix, or walks PMML's trees with JPMML's comparisons).
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
 * Every function checks the shapes and indexes it is given before it reads anything, so a
 * wrong call raises ValueError instead of reading out of bounds. The eventml modules that
 * call them (models/_rows.py, models/formats/_pmml/_binary.py) document the layouts.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A buffer of `count` items of the given struct format ("q" int64, "d" float64, "f" float32),
 * C-contiguous, writable when asked. */
static int
take_buffer(PyObject *obj, Py_buffer *view, const char *name, const char *format,
            Py_ssize_t count, int writable)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        return -1;
    }
    const char *got = view->format ? view->format : "B";
    if (got[0] == '<' || got[0] == '=' || got[0] == '@') {
        got++;
    }
    int same = strcmp(got, format) == 0 ||
               (strcmp(format, "q") == 0 && strcmp(got, "l") == 0 && view->itemsize == 8);
    if (!same || (count >= 0 && view->len != count * view->itemsize)) {
        PyErr_Format(PyExc_ValueError,
                     "expected %s as %zd items of format '%s', got %zd bytes of format '%s'",
                     name, count, format, view->len, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
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

/* The output matrix: float64 ("d") or float32 ("f"), rows * width items. */
static int
take_out(PyObject *obj, Py_buffer *view, Py_ssize_t count, int *single)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        return -1;
    }
    const char *f = view->format ? view->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') {
        f++;
    }
    *single = strcmp(f, "f") == 0;
    if ((!*single && strcmp(f, "d") != 0) || view->len != count * view->itemsize) {
        PyErr_Format(PyExc_ValueError,
                     "expected out as %zd float64 or float32 items, got %zd bytes of format '%s'",
                     count, view->len, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(read_maps_doc,
"read_maps(raws, signature, mask, offsets, out) -> bool\n\n"
"Read one float64 per output column from every encoded map in `raws` (a list of bytes-like\n"
"objects) into `out` (float64 or float32, len(raws) * len(offsets) items, row-major).\n"
"A map must be as long as `signature` and equal it wherever `mask` is 0xFF; `offsets`\n"
"(int64) are where each column's eight big-endian value bytes sit. False, and `out`\n"
"partly written, as soon as a map does not fit.");

static PyObject *
read_maps(PyObject *self, PyObject *args)
{
    PyObject *raws, *out_obj;
    Py_buffer sig, mask, offs, out;
    if (!PyArg_ParseTuple(args, "O!y*y*y*O:read_maps", &PyList_Type, &raws, &sig, &mask, &offs,
                          &out_obj)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(raws), length = sig.len;
    Py_ssize_t width = offs.len / 8;
    int single = 0, have_out = 0;
    if (mask.len != length || offs.len % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "expected a mask as long as the signature, int64 offsets");
        goto done;
    }
    const int64_t *offsets = (const int64_t *)offs.buf;
    for (Py_ssize_t j = 0; j < width; j++) {
        if (offsets[j] < 0 || offsets[j] + 8 > length) {
            PyErr_Format(PyExc_ValueError, "expected offsets within a map of %zd bytes, got %lld",
                         length, (long long)offsets[j]);
            goto done;
        }
    }
    if (take_out(out_obj, &out, n * width, &single) < 0) {
        goto done;
    }
    have_out = 1;
    const unsigned char *s = sig.buf, *m = mask.buf;
    int ok = 1;
    for (Py_ssize_t r = 0; r < n && ok; r++) {
        PyObject *item = PyList_GET_ITEM(raws, r);
        const unsigned char *row;
        Py_buffer view;
        int viewed = 0;
        if (PyBytes_CheckExact(item)) {
            row = (const unsigned char *)PyBytes_AS_STRING(item);
            if (PyBytes_GET_SIZE(item) != length) {
                ok = 0;
                break;
            }
        }
        else {
            if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) < 0) {
                goto done;
            }
            viewed = 1;
            row = view.buf;
            if (view.len != length) {
                ok = 0;
            }
        }
        if (ok && fits(row, s, m, length)) {
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
    if (have_out) {
        PyBuffer_Release(&out);
    }
    PyBuffer_Release(&sig);
    PyBuffer_Release(&mask);
    PyBuffer_Release(&offs);
    return result;
}

PyDoc_STRVAR(read_dicts_doc,
"read_dicts(rows, keys, columns, width, out) -> bool\n\n"
"Read plain dicts (type exactly dict) whose keys are exactly `keys` (a tuple of str), in\n"
"that order, and whose values are all floats (type exactly float): the value of key i goes\n"
"to output column columns[i] (int64, below `width`; -1 skips it); `out` is float64 or\n"
"float32, len(rows) * width items, row-major. False, and\n"
"`out` partly written, as soon as a row does not fit.");

static PyObject *
read_dicts(PyObject *self, PyObject *args)
{
    PyObject *rows, *keys, *out_obj;
    Py_buffer cols, out;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "O!O!y*nO:read_dicts", &PyList_Type, &rows, &PyTuple_Type, &keys,
                          &cols, &width, &out_obj)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows), count = PyTuple_GET_SIZE(keys);
    int single = 0, have_out = 0;
    if (cols.len != count * 8) {
        PyErr_Format(PyExc_ValueError, "expected %zd int64 columns, got %zd bytes", count,
                     cols.len);
        goto done;
    }
    const int64_t *columns = (const int64_t *)cols.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
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
    if (take_out(out_obj, &out, n * width, &single) < 0) {
        goto done;
    }
    have_out = 1;
    int ok = 1;
    for (Py_ssize_t r = 0; r < n && ok; r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyDict_CheckExact(row) || PyDict_GET_SIZE(row) != count) {
            ok = 0;
            break;
        }
        Py_ssize_t pos = 0, i = 0;
        PyObject *key, *value;
        while (PyDict_Next(row, &pos, &key, &value)) {
            PyObject *want = PyTuple_GET_ITEM(keys, i);
            /* both exact str (keys checked above): the comparison cannot fail */
            if ((key != want && (!PyUnicode_CheckExact(key) || PyUnicode_Compare(key, want))) ||
                !PyFloat_CheckExact(value)) {
                ok = 0;
                break;
            }
            if (columns[i] >= 0) {
                if (single) {
                    ((float *)out.buf)[r * width + columns[i]] = (float)PyFloat_AS_DOUBLE(value);
                }
                else {
                    ((double *)out.buf)[r * width + columns[i]] = PyFloat_AS_DOUBLE(value);
                }
            }
            i++;
        }
    }
    result = PyBool_FromLong(ok);
done:
    if (have_out) {
        PyBuffer_Release(&out);
    }
    PyBuffer_Release(&cols);
    return result;
}

PyDoc_STRVAR(walk_trees_doc,
"walk_trees(roots, left, right, column, threshold, op, depth, matrix, width, out)\n\n"
"Walk every (tree, row) pair `depth` steps down binary chains and write the node reached\n"
"to out[tree * rows + row] (int64). Node i compares x = matrix[row * width + column[i]]\n"
"(float64, row-major) with threshold[i]: the outcome is 0 (x < t), 1 (x == t) or 2\n"
"(x > t), and the walk goes to left[i] if bit `outcome` of op[i] is set, else right[i].\n"
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
    PyObject *objs[7], *out_obj;
    Py_ssize_t depth, width;
    Py_buffer b_roots, b_left, b_right, b_column, b_threshold, b_op, b_matrix, b_out;
    Py_buffer *taken[8];
    int n_taken = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOnOnO:walk_trees", &objs[0], &objs[1], &objs[2],
                          &objs[3], &objs[4], &objs[5], &depth, &objs[6], &width,
                          &out_obj)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (take_buffer(objs[0], &b_roots, "roots", "q", -1, 0) < 0) goto done;
    taken[n_taken++] = &b_roots;
    if (take_buffer(objs[1], &b_left, "left", "q", -1, 0) < 0) goto done;
    taken[n_taken++] = &b_left;
    Py_ssize_t nodes = b_left.len / 8, trees = b_roots.len / 8;
    if (take_buffer(objs[2], &b_right, "right", "q", nodes, 0) < 0) goto done;
    taken[n_taken++] = &b_right;
    if (take_buffer(objs[3], &b_column, "column", "q", nodes, 0) < 0) goto done;
    taken[n_taken++] = &b_column;
    if (take_buffer(objs[4], &b_threshold, "threshold", "d", nodes, 0) < 0) goto done;
    taken[n_taken++] = &b_threshold;
    if (take_buffer(objs[5], &b_op, "op", "q", nodes, 0) < 0) goto done;
    taken[n_taken++] = &b_op;
    if (take_buffer(objs[6], &b_matrix, "matrix", "d", -1, 0) < 0) goto done;
    taken[n_taken++] = &b_matrix;
    if (width <= 0 || depth < 0 || (b_matrix.len / 8) % width != 0) {
        PyErr_Format(PyExc_ValueError, "expected a matrix of rows of %zd values and depth >= 0",
                     width);
        goto done;
    }
    Py_ssize_t n = b_matrix.len / 8 / width;
    if (take_buffer(out_obj, &b_out, "out", "q", trees * n, 1) < 0) goto done;
    taken[n_taken++] = &b_out;
    const int64_t *roots = b_roots.buf, *left = b_left.buf, *right = b_right.buf;
    const int64_t *column = b_column.buf, *op = b_op.buf;
    const double *threshold = b_threshold.buf, *matrix = b_matrix.buf;
    int64_t *out = b_out.buf;
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
    /* one node's fields side by side: a step reads one cache line, not five arrays */
    struct node *table = PyMem_Malloc(nodes ? nodes * sizeof(struct node) : 1);
    if (table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nodes; i++) {
        table[i].threshold = threshold[i];
        table[i].left = left[i];
        table[i].right = right[i];
        table[i].column = (int32_t)column[i];
        table[i].op = (int32_t)op[i];
    }
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
    PyMem_Free(table);
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < n_taken; i++) {
        PyBuffer_Release(taken[i]);
    }
    return result;
}

PyDoc_STRVAR(sum_rows_doc,
"sum_rows(table, width, index, weights, out)\n\n"
"For every column r of `index` (int64, [segments, n] row-major): out[r] = the sum over\n"
"segments s, in order, of weights[s] * table[index[s, r]] (rows of `width` float64; no\n"
"weights: 1). `weights` is float64 [segments] or None. The first term is stored, each\n"
"later one added, one multiplication and one addition each (never fused), so the result\n"
"is bit for bit numpy's (weights[:, :, None] * table[index]).sum(axis=0).");

static PyObject *
sum_rows(PyObject *self, PyObject *args)
{
    PyObject *o_table, *o_index, *o_weights, *o_out;
    Py_ssize_t width;
    Py_buffer b_table, b_index, b_weights, b_out;
    int have_index = 0, have_weights = 0, have_out = 0;
    if (!PyArg_ParseTuple(args, "OnOOO:sum_rows", &o_table, &width, &o_index, &o_weights,
                          &o_out)) {
        return NULL;
    }
    if (take_buffer(o_table, &b_table, "table", "d", -1, 0) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (width <= 0 || (b_table.len / 8) % width != 0) {
        PyErr_Format(PyExc_ValueError, "expected a table of rows of %zd values", width);
        goto done;
    }
    Py_ssize_t rows = b_table.len / 8 / width;
    if (take_buffer(o_index, &b_index, "index", "q", -1, 0) < 0) goto done;
    have_index = 1;
    if (take_buffer(o_out, &b_out, "out", "d", -1, 1) < 0) goto done;
    have_out = 1;
    Py_ssize_t n = b_out.len / 8 / width, segments = n ? b_index.len / 8 / n : 0;
    if (b_out.len != n * width * 8 || b_index.len != segments * n * 8) {
        PyErr_Format(PyExc_ValueError, "expected out as rows of %zd values and index as "
                     "[segments, rows of out]", width);
        goto done;
    }
    const double *weights = NULL;
    if (o_weights != Py_None) {
        if (take_buffer(o_weights, &b_weights, "weights", "d", segments, 0) < 0) goto done;
        have_weights = 1;
        weights = b_weights.buf;
    }
    const int64_t *index = b_index.buf;
    for (Py_ssize_t i = 0; i < segments * n; i++) {
        if (index[i] < 0 || index[i] >= rows) {
            PyErr_Format(PyExc_ValueError, "index %lld is not a row of the table",
                         (long long)index[i]);
            goto done;
        }
    }
    const double *table = b_table.buf;
    double *out = b_out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < segments; s++) {
        const int64_t *at = index + s * n;
        double w = weights ? weights[s] : 1.0;
        for (Py_ssize_t r = 0; r < n; r++) {
            const double *from = table + at[r] * width;
            double *to = out + r * width;
            /* the same branch for a whole segment, so predicted; plain loops inside */
            if (s == 0 && weights) {
                for (Py_ssize_t j = 0; j < width; j++) to[j] = w * from[j];
            }
            else if (s == 0) {
                for (Py_ssize_t j = 0; j < width; j++) to[j] = from[j];
            }
            else if (weights) {
                for (Py_ssize_t j = 0; j < width; j++) to[j] += w * from[j];
            }
            else {
                for (Py_ssize_t j = 0; j < width; j++) to[j] += from[j];
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    if (have_weights) PyBuffer_Release(&b_weights);
    if (have_out) PyBuffer_Release(&b_out);
    if (have_index) PyBuffer_Release(&b_index);
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
    "Compiled loops: feature maps and dicts into a matrix, tree walks (see _kernels.c).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
