/*
 * Heap lookups for a batch in one native call each (slipstream/cache/arrays.py, ByteHeap):
 * which chunk files a batch's values lie in, and each value's memory address. A heap is a
 * byte array split into chunk files of chunk_bytes each; value i is sizes[i] bytes at
 * offset offsets[i]. The numpy equivalent costs a dozen array operations per batch, each
 * a microsecond or more of GIL on arrays this small. And the change check's stat() of a
 * batch's chunk files, in one call with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "_batch.h"

typedef struct {
    Py_buffer offsets, sizes, indices;
    int got;
    Py_ssize_t n_values, n;
} Lookup;

static void lookup_release(Lookup *L) {
    if (L->got > 2)
        PyBuffer_Release(&L->indices);
    if (L->got > 1)
        PyBuffer_Release(&L->sizes);
    if (L->got > 0)
        PyBuffer_Release(&L->offsets);
    L->got = 0;
}

/* The heap's offsets (uint64), sizes (uint32 or uint64) and a batch's indices (int64),
 * checked: every index names a value. */
static int lookup_open(Lookup *L, PyObject *o_off, PyObject *o_size, PyObject *o_idx,
                       const char *who) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
    L->got = 0;
    if (PyObject_GetBuffer(o_off, &L->offsets, flags))
        return -1;
    L->got++;
    if (PyObject_GetBuffer(o_size, &L->sizes, flags))
        goto fail;
    L->got++;
    if (PyObject_GetBuffer(o_idx, &L->indices, flags))
        goto fail;
    L->got++;
    L->n_values = L->offsets.len / 8;
    L->n = L->indices.len / 8;
    if (L->offsets.itemsize != 8 || L->indices.itemsize != 8 ||
        (L->sizes.itemsize != 4 && L->sizes.itemsize != 8) ||
        L->sizes.len / L->sizes.itemsize != L->n_values) {
        PyErr_Format(PyExc_ValueError, "%s: offsets uint64 (N,), sizes uint32 or uint64 (N,), "
                     "indices int64 (n,)", who);
        goto fail;
    }
    const int64_t *idx = L->indices.buf;
    for (Py_ssize_t k = 0; k < L->n; k++)
        if (idx[k] < 0 || idx[k] >= L->n_values) {
            PyErr_Format(PyExc_IndexError, "%s: index %lld out of range for a heap of %zd "
                         "values", who, (long long)idx[k], L->n_values);
            goto fail;
        }
    return 0;
fail:
    lookup_release(L);
    return -1;
}

/* Where an empty value "is": it touches no chunk, and native code reads nothing at it. */
static const uint8_t no_bytes[1];

static inline uint64_t value_size(const Lookup *L, int64_t i) {
    return L->sizes.itemsize == 4 ? ((const uint32_t *)L->sizes.buf)[i]
                                  : ((const uint64_t *)L->sizes.buf)[i];
}

/* No value spans more chunk files than this: a heap claiming otherwise (a chunk size of a
 * few bytes in its metadata) is refused rather than listed chunk by chunk. */
#define MAX_SPAN (1u << 20)

typedef struct {
    uint64_t first, last;
} Span;

static int span_order(const void *x, const void *y) {
    uint64_t a = ((const Span *)x)->first, b = ((const Span *)y)->first;
    return (a > b) - (a < b);
}

PyObject *kernel_heap_chunks(PyObject *mod, PyObject *args) {
    PyObject *o_off, *o_size, *o_idx;
    unsigned long long chunk_bytes;
    Py_ssize_t n_chunks;
    Lookup L;
    (void)mod;
    if (!PyArg_ParseTuple(args, "OOOKn", &o_off, &o_size, &o_idx, &chunk_bytes, &n_chunks))
        return NULL;
    if (chunk_bytes == 0 || n_chunks < 0) {
        PyErr_SetString(PyExc_ValueError, "heap_chunks: chunk_bytes > 0, n_chunks >= 0");
        return NULL;
    }
    if (lookup_open(&L, o_off, o_size, o_idx, "heap_chunks"))
        return NULL;
    PyObject *out = NULL;
    /* one span of chunks per value, sorted and merged: work grows with the batch, not
     * with the heap (whose size a damaged cache may misstate) */
    Span *spans = PyMem_Calloc((size_t)L.n + 1, sizeof(Span));
    Py_ssize_t m = 0;
    if (!spans) {
        PyErr_NoMemory();
        goto done;
    }
    const uint64_t *off = L.offsets.buf;
    const int64_t *idx = L.indices.buf;
    for (Py_ssize_t k = 0; k < L.n; k++) {
        uint64_t size = value_size(&L, idx[k]);
        if (!size) /* an empty value (the last one may sit right past the last chunk) */
            continue;
        uint64_t first = off[idx[k]] / chunk_bytes;
        uint64_t last = (off[idx[k]] + size - 1) / chunk_bytes;
        if (last >= (uint64_t)n_chunks || last < first) {
            PyErr_Format(PyExc_ValueError, "heap_chunks: value %lld lies past the heap's %zd "
                         "chunks", (long long)idx[k], n_chunks);
            goto done;
        }
        if (last - first >= MAX_SPAN) {
            PyErr_Format(PyExc_ValueError, "heap_chunks: value %lld spans %llu chunks of %llu "
                         "bytes: the heap's chunk size is implausible", (long long)idx[k],
                         (unsigned long long)(last - first + 1), chunk_bytes);
            goto done;
        }
        spans[m].first = first;
        spans[m].last = last;
        m++;
    }
    qsort(spans, (size_t)m, sizeof(Span), span_order);
    out = PyList_New(0);
    uint64_t next = 0; /* the first chunk not listed yet */
    for (Py_ssize_t j = 0; out && j < m; j++) {
        for (uint64_t c = spans[j].first > next ? spans[j].first : next; c <= spans[j].last;
             c++) {
            PyObject *v = PyLong_FromUnsignedLongLong(c);
            if (!v || PyList_Append(out, v)) {
                Py_XDECREF(v);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(v);
        }
        if (spans[j].last + 1 > next)
            next = spans[j].last + 1;
    }
done:
    PyMem_Free(spans);
    lookup_release(&L);
    return out;
}

PyObject *kernel_heap_locate(PyObject *mod, PyObject *args) {
    PyObject *o_off, *o_size, *o_idx, *o_bases, *o_addr;
    unsigned long long chunk_bytes;
    Lookup L;
    (void)mod;
    if (!PyArg_ParseTuple(args, "OOOKOO", &o_off, &o_size, &o_idx, &chunk_bytes, &o_bases,
                          &o_addr))
        return NULL;
    if (chunk_bytes == 0) {
        PyErr_SetString(PyExc_ValueError, "heap_locate: chunk_bytes > 0");
        return NULL;
    }
    if (lookup_open(&L, o_off, o_size, o_idx, "heap_locate"))
        return NULL;
    Py_buffer bb, ab;
    int got = 0;
    PyObject *out = NULL;
    if (PyObject_GetBuffer(o_bases, &bb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_addr, &ab, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE))
        goto done;
    got++;
    if (bb.itemsize != 8 || ab.itemsize != 8 || ab.len != L.n * 8) {
        PyErr_SetString(PyExc_ValueError, "heap_locate: bases uint64 (chunks,), addresses "
                        "writable uint64 (n,)");
        goto done;
    }
    Py_ssize_t n_chunks = bb.len / 8;
    const uint64_t *off = L.offsets.buf, *bases = bb.buf;
    const int64_t *idx = L.indices.buf;
    uint64_t *addr = ab.buf;
    PyObject *straddling = PyList_New(0);
    if (!straddling)
        goto done;
    for (Py_ssize_t k = 0; k < L.n; k++) {
        uint64_t c = off[idx[k]] / chunk_bytes, start = off[idx[k]] % chunk_bytes;
        if (!value_size(&L, idx[k])) {
            addr[k] = (uint64_t)(uintptr_t)no_bytes;
            continue;
        }
        if (c >= (uint64_t)n_chunks || !bases[c]) {
            PyErr_Format(PyExc_RuntimeError, "heap_locate: value %lld lies in chunk %llu, "
                         "which is not mapped (a streamed heap maps chunks only while pinned)",
                         (long long)idx[k], (unsigned long long)c);
            Py_DECREF(straddling);
            goto done;
        }
        addr[k] = bases[c] + start;
        if (start + value_size(&L, idx[k]) > chunk_bytes) { /* joined by the caller */
            PyObject *v = PyLong_FromSsize_t(k);
            if (!v || PyList_Append(straddling, v)) {
                Py_XDECREF(v);
                Py_DECREF(straddling);
                goto done;
            }
            Py_DECREF(v);
        }
    }
    out = straddling;
done:
    if (got > 1)
        PyBuffer_Release(&ab);
    if (got > 0)
        PyBuffer_Release(&bb);
    lookup_release(&L);
    return out;
}

/* stat_files(paths) -> list[(inode, size, mtime_ns) | None]: every path stat-ed with the
 * GIL released (None where it does not exist), the identity file_stamp() gives. */
PyObject *kernel_stat_files(PyObject *mod, PyObject *arg) {
    (void)mod;
    /* a tuple of our own: nothing can drop the str objects while the GIL is released */
    PyObject *seq = PySequence_Tuple(arg);
    if (!seq)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    const char **names = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    struct stat *st = PyMem_Calloc((size_t)n + 1, sizeof(struct stat));
    int *err = PyMem_Calloc((size_t)n + 1, sizeof(int));
    PyObject *out = NULL;
    if (!names || !st || !err) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) /* valid while seq holds the str objects */
        if (!(names[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(seq, i))))
            goto done;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        err[i] = stat(names[i], &st[i]) ? errno : 0;
    Py_END_ALLOW_THREADS
    out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *v;
        if (err[i] == ENOENT) {
            v = Py_None;
            Py_INCREF(v);
        } else if (err[i]) {
            errno = err[i];
            PyErr_SetFromErrnoWithFilename(PyExc_OSError, names[i]);
            Py_CLEAR(out);
            break;
        } else {
            long long mtime_ns = (long long)st[i].st_mtim.tv_sec * 1000000000LL +
                                 st[i].st_mtim.tv_nsec;
            v = Py_BuildValue("(KLL)", (unsigned long long)st[i].st_ino,
                              (long long)st[i].st_size, mtime_ns);
        }
        if (!v)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, v);
    }
done:
    PyMem_Free(names);
    PyMem_Free(st);
    PyMem_Free(err);
    Py_DECREF(seq);
    return out;
}

/* heap_gather(offsets, sizes, codecs, heights, widths, indices, chunk_bytes, bases,
 *             native_codecs, table) -> (straddling, other_codecs)
 * An image column's samples `indices` as the decode kernel's table: rows address, size,
 * codec, height, width (uint64 (5, n)). Positions of values that continue into the next
 * chunk (the caller joins those and fixes their address) and of samples whose codec is
 * not in the native_codecs bit mask (decoded in Python) come back as lists. */
PyObject *kernel_heap_gather(PyObject *mod, PyObject *args) {
    PyObject *o_off, *o_size, *o_codec, *o_h, *o_w, *o_idx, *o_bases, *o_table;
    unsigned long long chunk_bytes, native_codecs;
    Lookup L;
    (void)mod;
    if (!PyArg_ParseTuple(args, "OOOOOOKOKO", &o_off, &o_size, &o_codec, &o_h, &o_w, &o_idx,
                          &chunk_bytes, &o_bases, &native_codecs, &o_table))
        return NULL;
    if (chunk_bytes == 0) {
        PyErr_SetString(PyExc_ValueError, "heap_gather: chunk_bytes > 0");
        return NULL;
    }
    if (lookup_open(&L, o_off, o_size, o_idx, "heap_gather"))
        return NULL;
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
    Py_buffer cb, hb, wb, bb, tb;
    int got = 0;
    PyObject *straddling = NULL, *others = NULL, *out = NULL;
    if (PyObject_GetBuffer(o_codec, &cb, flags))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_h, &hb, flags))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_w, &wb, flags))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_bases, &bb, flags))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_table, &tb, flags | PyBUF_WRITABLE))
        goto done;
    got++;
    if (cb.itemsize != 1 || cb.len != L.n_values || hb.itemsize != 4 ||
        hb.len != L.n_values * 4 || wb.itemsize != 4 || wb.len != L.n_values * 4 ||
        bb.itemsize != 8 || tb.itemsize != 8 || tb.len != L.n * 40) {
        PyErr_SetString(PyExc_ValueError, "heap_gather: codecs uint8, heights and widths "
                        "uint32 (N,), bases uint64 (chunks,), table writable uint64 (5, n)");
        goto done;
    }
    straddling = PyList_New(0);
    others = PyList_New(0);
    if (!straddling || !others)
        goto done;
    Py_ssize_t n = L.n, n_chunks = bb.len / 8;
    const uint64_t *off = L.offsets.buf, *bases = bb.buf;
    const uint8_t *codecs = cb.buf;
    const uint32_t *hs = hb.buf, *ws = wb.buf;
    const int64_t *idx = L.indices.buf;
    uint64_t *t = tb.buf;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t i = idx[k];
        uint64_t c = off[i] / chunk_bytes, start = off[i] % chunk_bytes;
        uint64_t size = value_size(&L, i);
        if (size && (c >= (uint64_t)n_chunks || !bases[c])) {
            PyErr_Format(PyExc_RuntimeError, "heap_gather: value %lld lies in chunk %llu, "
                         "which is not mapped (a streamed heap maps chunks only while pinned)",
                         (long long)i, (unsigned long long)c);
            goto done;
        }
        t[k] = size ? bases[c] + start : (uint64_t)(uintptr_t)no_bytes;
        t[n + k] = size;
        t[2 * n + k] = codecs[i];
        t[3 * n + k] = hs[i];
        t[4 * n + k] = ws[i];
        PyObject *lists[2] = {start + size > chunk_bytes ? straddling : NULL,
                              codecs[i] >= 64 || !((native_codecs >> codecs[i]) & 1) ? others
                                                                                      : NULL};
        for (int j = 0; j < 2; j++) {
            if (!lists[j])
                continue;
            PyObject *v = PyLong_FromSsize_t(k);
            int bad = !v || PyList_Append(lists[j], v);
            Py_XDECREF(v);
            if (bad)
                goto done;
        }
    }
    out = PyTuple_Pack(2, straddling, others);
done:
    Py_XDECREF(straddling);
    Py_XDECREF(others);
    if (got > 4)
        PyBuffer_Release(&tb);
    if (got > 3)
        PyBuffer_Release(&bb);
    if (got > 2)
        PyBuffer_Release(&wb);
    if (got > 1)
        PyBuffer_Release(&hb);
    if (got > 0)
        PyBuffer_Release(&cb);
    lookup_release(&L);
    return out;
}
