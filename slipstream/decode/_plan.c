/*
 * Batch crop planning in one native call: the random resized crop boxes of a batch, drawn
 * from the counter-based stream of slipstream/_rng.py, and optionally snapped to the DCT
 * grid they are decoded on (slipstream/decode/geometry.py's plan_crops).
 *
 * This is the vectorised numpy code of geometry.py (random_resized_crop_boxes, plan_crops)
 * and _rng.py (uniforms) done per sample, with the same operations in the same order, so
 * it yields the same boxes (tests/decode/test_plan.py compares them on many batches). It
 * draws only the attempts a sample needs, where numpy draws all ten for every sample.
 * Compiled without FMA contraction (setup.py passes -ffp-contract=off): a fused
 * multiply-add would round differently from numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>

#include "_batch.h"

#define GOLDEN 0x9E3779B97F4A7C15ULL
#define ATTEMPTS 10

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Uniform draw d (0-based) of the stream keyed by `key`: _rng.uniforms' column d. */
static inline double draw(uint64_t key, uint64_t d) {
    return (double)(mix(key ^ ((d + 1) * GOLDEN)) >> 11) * (1.0 / 9007199254740992.0);
}

typedef struct {
    double s0, s_span, log_lo, log_span, r_min, r_max;
} Params;

/* torchvision's RandomResizedCrop.get_params for one H x W image (geometry.py). */
static void rrc_box(uint64_t key, double H, double W, const Params *p, int64_t box[4]) {
    for (int a = 0; a < ATTEMPTS; a++) {
        double area = H * W * (p->s0 + p->s_span * draw(key, 4 * a));
        double aspect = exp(p->log_lo + p->log_span * draw(key, 4 * a + 1));
        double w = rint(sqrt(area * aspect));
        double h = rint(sqrt(area / aspect));
        if (w > 0 && w <= W && h > 0 && h <= H) {
            box[0] = (int64_t)floor(draw(key, 4 * a + 2) * (H - h + 1));
            box[1] = (int64_t)floor(draw(key, 4 * a + 3) * (W - w + 1));
            box[2] = (int64_t)h;
            box[3] = (int64_t)w;
            return;
        }
    }
    double in_ratio = W / H, fw = W, fh = H;
    if (in_ratio < p->r_min)
        fh = fmax(1, rint(W / p->r_min)); /* at least one pixel, as in geometry.py */
    else if (in_ratio > p->r_max)
        fw = fmax(1, rint(H * p->r_max));
    box[0] = (int64_t)floor((H - fh) / 2);
    box[1] = (int64_t)floor((W - fw) / 2);
    box[2] = (int64_t)fh;
    box[3] = (int64_t)fw;
}

/* plan_crops for one box: the DCT denominator, and the box grown to its grid. */
static int64_t snap_box(int64_t box[4], int64_t H, int64_t W, int64_t out_h, int64_t out_w) {
    int64_t d = 1;
    for (int64_t den = 2; den <= 8; den *= 2)
        if (box[2] >= out_h * den && box[3] >= out_w * den)
            d = den;
    int64_t g = d > 2 ? d : 2;
    int64_t y0 = box[0] / g * g, x0 = box[1] / g * g;
    int64_t y1 = (box[0] + box[2] + g - 1) / g * g, x1 = (box[1] + box[3] + g - 1) / g * g;
    if (y1 > H)
        y1 = H;
    if (x1 > W)
        x1 = W;
    box[0] = y0;
    box[1] = x0;
    box[2] = y1 - y0;
    box[3] = x1 - x0;
    return d;
}

PyObject *kernel_plan_rrc(PyObject *mod, PyObject *args) {
    PyObject *o_idx, *o_h, *o_w, *o_boxes, *o_denoms;
    unsigned long long stream_key;
    int by_index;
    Params p;
    long long out_h, out_w;
    (void)mod;
    if (!PyArg_ParseTuple(args, "KOOOpdddddd" "LLOO", &stream_key, &o_idx, &o_h, &o_w,
                          &by_index, &p.s0, &p.s_span, &p.log_lo, &p.log_span, &p.r_min,
                          &p.r_max, &out_h, &out_w, &o_boxes, &o_denoms))
        return NULL;
    if (out_h < 1 || out_w < 1 || out_h > (1LL << 30) || out_w > (1LL << 30)) {
        PyErr_Format(PyExc_ValueError, "plan_rrc: output size %lld x %lld out of range",
                     out_h, out_w);
        return NULL;
    }
    Py_buffer ib, hb, wb, bb, db;
    int got = 0;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(o_idx, &ib, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        return NULL;
    got++;
    Py_ssize_t n = ib.len / 8;
    if (ib.itemsize != 8)
        goto bad;
    if (PyObject_GetBuffer(o_h, &hb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_w, &wb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT))
        goto done;
    got++;
    if (PyObject_GetBuffer(o_boxes, &bb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE))
        goto done;
    got++;
    int snap = o_denoms != Py_None;
    if (snap) {
        if (PyObject_GetBuffer(o_denoms, &db, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE))
            goto done;
        got++;
        if (db.itemsize != 8 || db.len != n * 8)
            goto bad;
    }
    /* heights and widths per batch position, or (by_index) whole columns read at indices */
    Py_ssize_t n_sizes = hb.len / 4;
    if (hb.itemsize != 4 || wb.itemsize != 4 || wb.len != hb.len ||
        (!by_index && n_sizes != n) || bb.itemsize != 8 || bb.len != n * 32)
        goto bad;
    const uint64_t *idx = ib.buf;
    const uint32_t *heights = hb.buf, *widths = wb.buf;
    int64_t *boxes = bb.buf, *denoms = snap ? db.buf : NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        int64_t *box = boxes + 4 * k;
        Py_ssize_t at = by_index ? (Py_ssize_t)idx[k] : k;
        if (by_index && idx[k] >= (uint64_t)n_sizes) {
            PyErr_Format(PyExc_IndexError, "plan_rrc: index %llu out of range for %zd images",
                         (unsigned long long)idx[k], n_sizes);
            goto done;
        }
        uint32_t h = heights[at], w = widths[at];
        if (h == 0 || w == 0) { /* no image to crop: the decode reports it */
            box[0] = box[1] = box[2] = box[3] = 0;
            if (snap)
                denoms[k] = 1;
            continue;
        }
        uint64_t key = mix(stream_key ^ (idx[k] * GOLDEN + GOLDEN));
        rrc_box(key, (double)h, (double)w, &p, box);
        if (snap)
            denoms[k] = snap_box(box, h, w, out_h, out_w);
    }
    result = Py_None;
    Py_INCREF(result);
    goto done;
bad:
    PyErr_SetString(PyExc_ValueError,
                    "plan_rrc: indices int64/uint64 (n,), heights and widths uint32 (n,), or "
                    "(N,) with by_index, "
                    "boxes writable int64 (n, 4), denoms writable int64 (n,) or None");
done:
    if (got > 4)
        PyBuffer_Release(&db);
    if (got > 3)
        PyBuffer_Release(&bb);
    if (got > 2)
        PyBuffer_Release(&wb);
    if (got > 1)
        PyBuffer_Release(&hb);
    PyBuffer_Release(&ib);
    return result;
}
