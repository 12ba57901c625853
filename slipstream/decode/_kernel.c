/*
 * slipstream.decode._kernel: decode, crop and resize a whole batch slice per call, with
 * the GIL released for the whole slice.
 *
 * Python plans the batch (crop boxes and the DCT scale of every sample) and hands this
 * module flat arrays; see slipstream/decode/kernel.py for the wrapper and
 * docs/architecture.md for the contract. Per sample:
 *
 *   JPEG    libjpeg API (libjpeg-turbo >= 1.5): decode only the rows and columns of the
 *           union of the sample's crop boxes (jpeg_crop_scanline, jpeg_skip_scanlines,
 *           jpeg_abort_decompress), at the planned 1/denom scale, then an anti-aliased
 *           resize (Pillow's triangle filter) of every view's box into its batch slot.
 *   YUV420  crop and resize the three planes, then YCbCr -> RGB into the batch slot.
 *
 * Every sample is untrusted input: the library's output geometry is checked against the
 * buffers before any row is read, scratch memory is bounded by max_pixels, and libjpeg
 * errors come back through setjmp/longjmp as per-sample error codes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdarg.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>
#include <jerror.h>

#include "_batch.h"

/* Per-sample result codes (mirrored in kernel.py). */
enum {
    K_OK = 0,
    K_CORRUPT = 1,         /* libjpeg refused the data */
    K_TRUNCATED = 2,       /* the data ends before the image does */
    K_HEADER_MISMATCH = 3, /* the JPEG header disagrees with the stored height/width */
    K_UNSUPPORTED = 4,     /* precision, colour space or process this kernel does not decode */
    K_TOO_LARGE = 5,       /* more pixels than max_pixels */
    K_BAD_BOX = 6,         /* a crop box outside the image, or empty */
    K_BAD_SIZE = 7,        /* YUV420 bytes of the wrong length */
    K_BAD_SCALE = 8,       /* the library's output geometry is not the planned one */
    K_NO_MEMORY = 9,
};

#define CODEC_JPEG 0
#define CODEC_YUV420 3
#define MAX_VIEWS 32
#define MAX_OUT_SIDE 65536 /* output sides: keeps every buffer-size product in range */
/* Scaled pixels decoded beyond the crop on every side: fancy chroma upsampling reads
 * neighbouring chroma samples, so without a margin a region's edge differs from a full
 * decode. */
#define CONTEXT 2
/* Resampling weights: 14-bit fixed point in int16, so that the multiply vectorises
 * (pmaddwd-style widening) at plain -O3 on baseline x86-64. */
#define WBITS 14
#define MSG_LEN 160

/* ---------------------------------------------------------------- scratch memory -- */

typedef struct {
    void *p;
    size_t cap;
} Buf;

/* At least n bytes (contents not kept), or NULL. */
static void *buf_get(Buf *b, size_t n) {
    if (n <= b->cap && b->p)
        return b->p;
    free(b->p);
    size_t want = n + n / 4 + 64;
    b->p = malloc(want);
    b->cap = b->p ? want : 0;
    return b->p;
}

static void buf_free(Buf *b) {
    free(b->p);
    b->p = NULL;
    b->cap = 0;
}

typedef struct {
    Buf fy, fx, a, at, bt, acc;
} ResizeScratch;

static void resize_scratch_free(ResizeScratch *s) {
    buf_free(&s->fy);
    buf_free(&s->fx);
    buf_free(&s->a);
    buf_free(&s->at);
    buf_free(&s->bt);
    buf_free(&s->acc);
}

/* ------------------------------------------------------- anti-aliased resampling -- */

/* One axis of a resize: output j reads taps source lines from start[j], weighted by
 * w[j * taps + k] (zero-padded to a fixed tap count). */
typedef struct {
    int n_out, taps;
    int32_t *start;
    int16_t *w;
} Filter;

static double triangle(double x) {
    if (x < 0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs for its BILINEAR (triangle) filter: the source interval
 * [box0, box0 + extent) of an axis of in_size pixels onto n_out pixels, the support
 * widened by the shrink factor. Returns 0, or -1 without memory. */
static int filter_make(Filter *f, Buf *store, int in_size, double box0, double extent,
                       int n_out) {
    double scale = extent / n_out;
    double fs = scale < 1.0 ? 1.0 : scale;
    double support = fs;
    int ksize = (int)ceil(support) * 2 + 1;
    size_t n = (size_t)n_out;
    size_t bytes = n * sizeof(int32_t) * 2 + n * (size_t)ksize * sizeof(int16_t) +
                   n * (size_t)ksize * sizeof(double);
    char *mem = buf_get(store, bytes);
    if (!mem)
        return -1;
    int32_t *xmin = (int32_t *)mem;
    int32_t *count = xmin + n;
    double *k = (double *)(count + n);
    int16_t *w = (int16_t *)(k + n * (size_t)ksize);
    int taps = 1;
    for (int j = 0; j < n_out; j++) {
        double center = box0 + (j + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in_size)
            hi = in_size;
        if (hi - lo > ksize)
            hi = lo + ksize;
        double *kj = k + (size_t)j * ksize;
        double sum = 0.0;
        for (int x = lo; x < hi; x++) {
            kj[x - lo] = triangle((x - center + 0.5) / fs);
            sum += kj[x - lo];
        }
        if (hi <= lo || sum <= 0.0) { /* degenerate: nearest source pixel */
            lo = (int)center;
            if (lo >= in_size)
                lo = in_size - 1;
            if (lo < 0)
                lo = 0;
            hi = lo + 1;
            kj[0] = sum = 1.0;
        }
        for (int x = 0; x < hi - lo; x++)
            kj[x] /= sum;
        xmin[j] = lo;
        count[j] = hi - lo;
        if (hi - lo > taps)
            taps = hi - lo;
    }
    if (taps > in_size)
        taps = in_size;
    /* fixed tap count: move windows that would run past the end back (the upper clamp
     * only; xmin is never negative) and zero-pad the weights */
    f->n_out = n_out;
    f->taps = taps;
    f->start = xmin;
    f->w = w;
    memset(w, 0, n * (size_t)taps * sizeof(int16_t));
    for (int j = 0; j < n_out; j++) {
        int lo = xmin[j], shift = 0;
        if (lo + taps > in_size) {
            shift = lo + taps - in_size;
            lo -= shift;
        }
        for (int x = 0; x < count[j]; x++)
            w[(size_t)j * taps + shift + x] =
                (int16_t)(k[(size_t)j * ksize + x] * (1 << WBITS) + 0.5);
        xmin[j] = lo;
    }
    return 0;
}

static inline void accumulate(int32_t *restrict acc, const uint8_t *restrict row, size_t n,
                              int16_t wk) {
    for (size_t x = 0; x < n; x++)
        acc[x] += wk * (int16_t)row[x];
}

/* One output row, portable C: acc += w[k] * row k, tap by tap. */
static void resample_row_c(const uint8_t *s, ptrdiff_t src_stride, size_t row_len,
                           const int16_t *w, int taps, uint8_t *restrict d,
                           int32_t *restrict acc) {
    for (size_t x = 0; x < row_len; x++)
        acc[x] = 1 << (WBITS - 1);
    for (int k = 0; k < taps; k++)
        if (w[k])
            accumulate(acc, s + (ptrdiff_t)k * src_stride, row_len, w[k]);
    for (size_t x = 0; x < row_len; x++) {
        int32_t v = acc[x] >> WBITS;
        d[x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

#if defined(__SSE2__)
#include <emmintrin.h>
#define SIMD_MAX_PAIRS 32

/* The nonzero taps of one output row in pairs, for the SIMD rows: the two source rows of
 * pair p (ra, rb; rb = ra for an odd last tap) and their two 16-bit weights packed in one
 * 32-bit word (the operand of a multiply-add of interleaved bytes). */
static int pair_taps(const uint8_t *s, ptrdiff_t src_stride, const int16_t *w, int taps,
                     const uint8_t **ra, const uint8_t **rb, int32_t *wp) {
    int pairs = 0;
    for (int k = 0; k < taps; k += 2) {
        int16_t w0 = w[k], w1 = k + 1 < taps ? w[k + 1] : 0;
        if (!w0 && !w1)
            continue;
        ra[pairs] = s + (ptrdiff_t)k * src_stride;
        rb[pairs] = k + 1 < taps ? ra[pairs] + src_stride : ra[pairs];
        wp[pairs] = (int32_t)((uint32_t)(uint16_t)w0 | ((uint32_t)(uint16_t)w1 << 16));
        pairs++;
    }
    return pairs;
}

/* Output bytes [x, row_len) of one row in plain C: the tail past the SIMD steps. */
static void resample_row_tail(const uint8_t *s, ptrdiff_t src_stride, size_t x,
                              size_t row_len, const int16_t *w, int taps,
                              uint8_t *restrict d) {
    for (; x < row_len; x++) {
        int32_t acc = 1 << (WBITS - 1);
        for (int k = 0; k < taps; k++)
            acc += w[k] * (int32_t)s[(ptrdiff_t)k * src_stride + (ptrdiff_t)x];
        acc >>= WBITS;
        d[x] = (uint8_t)(acc < 0 ? 0 : acc > 255 ? 255 : acc);
    }
}

/* One output row with SSE2: taps in pairs, bytes of two source rows interleaved and
 * multiplied-added with pmaddwd, the sums kept in registers across taps. Eight output
 * bytes per step; the tail in C. */
static void resample_row_sse2(const uint8_t *s, ptrdiff_t src_stride, size_t row_len,
                              const int16_t *w, int taps, uint8_t *restrict d) {
    const uint8_t *ra[SIMD_MAX_PAIRS], *rb[SIMD_MAX_PAIRS];
    int32_t wp[SIMD_MAX_PAIRS];
    int pairs = pair_taps(s, src_stride, w, taps, ra, rb, wp);
    const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(1 << (WBITS - 1));
    size_t x = 0;
    for (; x + 8 <= row_len; x += 8) {
        __m128i lo = half, hi = half;
        for (int p = 0; p < pairs; p++) {
            __m128i ab = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(ra[p] + x)),
                                           _mm_loadl_epi64((const __m128i *)(rb[p] + x)));
            __m128i wv = _mm_set1_epi32(wp[p]);
            lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_unpacklo_epi8(ab, zero), wv));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_unpackhi_epi8(ab, zero), wv));
        }
        __m128i v = _mm_packs_epi32(_mm_srai_epi32(lo, WBITS), _mm_srai_epi32(hi, WBITS));
        _mm_storel_epi64((__m128i *)(d + x), _mm_packus_epi16(v, v));
    }
    resample_row_tail(s, src_stride, x, row_len, w, taps, d);
}
#endif

#if defined(__SSE2__) && defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_VARIANT 1

/* resample_row_sse2 with 256-bit registers: sixteen output bytes per step. Compiled for
 * AVX2 alone and chosen at import where the CPU has it (the default build stays
 * baseline x86-64). */
__attribute__((target("avx2"))) static void resample_row_avx2(const uint8_t *s,
                                                              ptrdiff_t src_stride,
                                                              size_t row_len, const int16_t *w,
                                                              int taps, uint8_t *restrict d) {
    const uint8_t *ra[SIMD_MAX_PAIRS], *rb[SIMD_MAX_PAIRS];
    int32_t wp[SIMD_MAX_PAIRS];
    int pairs = pair_taps(s, src_stride, w, taps, ra, rb, wp);
    const __m256i half = _mm256_set1_epi32(1 << (WBITS - 1));
    size_t x = 0;
    for (; x + 16 <= row_len; x += 16) {
        __m256i lo = half, hi = half;
        for (int p = 0; p < pairs; p++) {
            __m128i a = _mm_loadu_si128((const __m128i *)(ra[p] + x));
            __m128i b = _mm_loadu_si128((const __m128i *)(rb[p] + x));
            __m256i wv = _mm256_set1_epi32(wp[p]);
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b)), wv));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b)), wv));
        }
        /* packs works per 128-bit lane: [0-3, 8-11 | 4-7, 12-15]; put the quads in order */
        __m256i v = _mm256_packs_epi32(_mm256_srai_epi32(lo, WBITS), _mm256_srai_epi32(hi, WBITS));
        v = _mm256_permute4x64_epi64(v, 0xD8);
        _mm_storeu_si128((__m128i *)(d + x), _mm_packus_epi16(_mm256_castsi256_si128(v),
                                                             _mm256_extracti128_si256(v, 1)));
    }
    resample_row_tail(s, src_stride, x, row_len, w, taps, d);
}
#endif

#if defined(__SSE2__)
typedef void (*RowFn)(const uint8_t *, ptrdiff_t, size_t, const int16_t *, int, uint8_t *);
static RowFn resample_row_simd = resample_row_sse2; /* resample_row_avx2 where the CPU has it */
#endif

/* dst row j = sum_k w[j][k] * src row (start[j] + k), for rows of row_len bytes. */
static void resample_rows(const uint8_t *src, ptrdiff_t src_stride, size_t row_len,
                          const Filter *f, uint8_t *dst, ptrdiff_t dst_stride,
                          int32_t *restrict acc) {
    for (int j = 0; j < f->n_out; j++) {
        const int16_t *w = f->w + (size_t)j * f->taps;
        const uint8_t *s = src + (ptrdiff_t)f->start[j] * src_stride;
        uint8_t *d = dst + (ptrdiff_t)j * dst_stride;
#if defined(__SSE2__)
        if (f->taps <= 2 * SIMD_MAX_PAIRS) {
            resample_row_simd(s, src_stride, row_len, w, f->taps, d);
            continue;
        }
#endif
        resample_row_c(s, src_stride, row_len, w, f->taps, d, acc);
    }
}

#if defined(__SSE2__)
/* dst[c][r] = src[r][c] for an 8x8 block of bytes. */
static void transpose8x8_u8(const uint8_t *src, ptrdiff_t ss, uint8_t *dst, ptrdiff_t ds) {
    __m128i r[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm_loadl_epi64((const __m128i *)(src + i * ss));
    __m128i a0 = _mm_unpacklo_epi8(r[0], r[1]), a1 = _mm_unpacklo_epi8(r[2], r[3]);
    __m128i a2 = _mm_unpacklo_epi8(r[4], r[5]), a3 = _mm_unpacklo_epi8(r[6], r[7]);
    __m128i b0 = _mm_unpacklo_epi16(a0, a1), b1 = _mm_unpackhi_epi16(a0, a1);
    __m128i b2 = _mm_unpacklo_epi16(a2, a3), b3 = _mm_unpackhi_epi16(a2, a3);
    __m128i c[4] = {_mm_unpacklo_epi32(b0, b2), _mm_unpackhi_epi32(b0, b2),
                    _mm_unpacklo_epi32(b1, b3), _mm_unpackhi_epi32(b1, b3)};
    for (int i = 0; i < 4; i++) {
        _mm_storel_epi64((__m128i *)(dst + (2 * i) * ds), c[i]);
        _mm_storel_epi64((__m128i *)(dst + (2 * i + 1) * ds), _mm_unpackhi_epi64(c[i], c[i]));
    }
}
#endif

/* dst[c][r] = src[r][c] for pixels of psz (1 or 3) bytes, in cache-sized blocks. */
static void transpose(const uint8_t *src, ptrdiff_t ss, int rows, int cols, int psz,
                      uint8_t *dst, ptrdiff_t ds) {
    enum { B = 32 };
    for (int r0 = 0; r0 < rows; r0 += B) {
        int r1 = r0 + B < rows ? r0 + B : rows;
        for (int c0 = 0; c0 < cols; c0 += B) {
            int c1 = c0 + B < cols ? c0 + B : cols;
            if (psz == 3) {
                /* a pixel moves as one 4-byte load and store; the byte after it is
                 * overwritten by the next pixel of the same dst row. The last source
                 * column and the last dst pixel of a row move byte by byte, so nothing
                 * is read or written past a row. */
                for (int c = c0; c < c1; c++) {
                    uint8_t *d = dst + c * ds;
                    const uint8_t *s = src + c * 3;
                    int last = r1 == rows ? r1 - 1 : r1;
                    int r = r0;
                    if (c + 1 < cols)
                        for (; r < last; r++) {
                            uint32_t v;
                            memcpy(&v, s + r * ss, 4);
                            memcpy(d + r * 3, &v, 4);
                        }
                    for (; r < r1; r++) {
                        d[r * 3] = s[r * ss];
                        d[r * 3 + 1] = s[r * ss + 1];
                        d[r * 3 + 2] = s[r * ss + 2];
                    }
                }
            } else {
                int r = r0;
#if defined(__SSE2__)
                for (; r + 8 <= r1; r += 8) {
                    int c = c0;
                    for (; c + 8 <= c1; c += 8)
                        transpose8x8_u8(src + r * ss + c, ss, dst + c * ds + r, ds);
                    for (; c < c1; c++)
                        for (int i = r; i < r + 8; i++)
                            dst[c * ds + i] = src[i * ss + c];
                }
#endif
                for (; r < r1; r++) {
                    const uint8_t *s = src + r * ss;
                    for (int c = c0; c < c1; c++)
                        dst[c * ds + r] = s[c];
                }
            }
        }
    }
}

/* Resize the box [y0, y0 + eh) x [x0, x0 + ew) of src (in_h x in_w pixels of psz bytes,
 * rows src_stride apart; the box may have fractional edges) to out_h x out_w pixels at
 * dst. Both passes are row-accumulate loops: vertical, transpose, vertical, transpose.
 * Returns 0 or -1 without memory. */
static int resize_box(ResizeScratch *rs, const uint8_t *src, ptrdiff_t src_stride, int in_h,
                      int in_w, int psz, double y0, double eh, double x0, double ew,
                      uint8_t *dst, ptrdiff_t dst_stride, int out_h, int out_w) {
    Filter fy, fx;
    if (filter_make(&fy, &rs->fy, in_h, y0, eh, out_h) ||
        filter_make(&fx, &rs->fx, in_w, x0, ew, out_w))
        return -1;
    /* only the columns the horizontal filter reads */
    int c_lo = fx.start[0], c_hi = 0;
    for (int j = 0; j < out_w; j++) {
        if (fx.start[j] < c_lo)
            c_lo = fx.start[j];
        if (fx.start[j] + fx.taps > c_hi)
            c_hi = fx.start[j] + fx.taps;
    }
    for (int j = 0; j < out_w; j++)
        fx.start[j] -= c_lo;
    int cols = c_hi - c_lo;
    size_t a_row = (size_t)cols * psz, t_row = (size_t)out_h * psz;
    size_t acc_len = a_row > t_row ? a_row : t_row;
    uint8_t *a = buf_get(&rs->a, (size_t)out_h * a_row);
    uint8_t *at = buf_get(&rs->at, (size_t)cols * t_row);
    uint8_t *bt = buf_get(&rs->bt, (size_t)out_w * t_row);
    int32_t *acc = buf_get(&rs->acc, acc_len * sizeof(int32_t));
    if (!a || !at || !bt || !acc)
        return -1;
    resample_rows(src + (ptrdiff_t)c_lo * psz, src_stride, a_row, &fy, a, (ptrdiff_t)a_row, acc);
    transpose(a, (ptrdiff_t)a_row, out_h, cols, psz, at, (ptrdiff_t)t_row);
    resample_rows(at, (ptrdiff_t)t_row, t_row, &fx, bt, (ptrdiff_t)t_row, acc);
    transpose(bt, (ptrdiff_t)t_row, out_w, out_h, psz, dst, dst_stride);
    return 0;
}

/* -------------------------------------------------------------------- libjpeg -- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    int truncated;
    char message[JMSG_LENGTH_MAX];
} ErrorMgr;

static void on_error_exit(j_common_ptr c) {
    ErrorMgr *e = (ErrorMgr *)c->err;
    (*c->err->format_message)(c, e->message);
    longjmp(e->jmp, 1);
}

/* Warnings pass (as TurboJPEG's do), except running out of data: libjpeg fills the rest
 * of a truncated image with grey and calls that a warning. */
static void on_emit_message(j_common_ptr c, int level) {
    ErrorMgr *e = (ErrorMgr *)c->err;
    if (level >= 0)
        return;
    c->err->num_warnings++;
    if (c->err->msg_code == JWRN_JPEG_EOF) {
        e->truncated = 1;
        (*c->err->format_message)(c, e->message);
        longjmp(e->jmp, 1);
    }
}

static void on_output_message(j_common_ptr c) { (void)c; }

/* ------------------------------------------------------------------- the worker -- */

typedef struct {
    PyObject_HEAD
    struct jpeg_decompress_struct cinfo;
    ErrorMgr err;
    int cinfo_ready;
    int busy;
    ResizeScratch rs;
    Buf decoded, spare, planes;
    unsigned long long native_ns; /* this thread's CPU time inside run() without the GIL */
    PyObject *weakrefs;
} Worker;

typedef struct {
    const int64_t *box; /* views x (top, left, height, width), full-resolution pixels */
    int views;
    uint8_t *const *out; /* per view: the sample's output pixels */
    const int *oh, *ow;
} Views;

static int set_msg(char *msg, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, MSG_LEN, fmt, ap);
    va_end(ap);
    return code;
}

static int check_boxes(const Views *v, long H, long W, char *msg) {
    for (int i = 0; i < v->views; i++) {
        const int64_t *b = v->box + 4 * i;
        if (b[0] < 0 || b[1] < 0 || b[2] < 1 || b[3] < 1 || b[0] + b[2] > H || b[1] + b[3] > W)
            return set_msg(msg, K_BAD_BOX,
                           "crop box (top %lld, left %lld, height %lld, width %lld) is not "
                           "inside the %ldx%ld image",
                           (long long)b[0], (long long)b[1], (long long)b[2], (long long)b[3],
                           W, H);
    }
    return K_OK;
}

static int ends_at_eoi(const uint8_t *data, size_t size) {
    return size >= 2 && data[size - 2] == 0xFF && data[size - 1] == 0xD9;
}

static JDIMENSION ceil_div(JDIMENSION a, JDIMENSION d) { return (a + d - 1) / d; }

/* Decode a JPEG's region (the union of the views' boxes) at 1/denom and resize every
 * view's box into its output. The decompressor is reset (abort) on every exit. */
static int jpeg_sample(Worker *wk, const uint8_t *data, size_t size, long H, long W, int denom,
                       const Views *v, int region, int fast, uint64_t max_pixels, char *msg) {
    struct jpeg_decompress_struct *ci = &wk->cinfo;
    int code = check_boxes(v, H, W, msg);
    if (code)
        return code;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8)
        return set_msg(msg, K_BAD_SCALE, "DCT scale 1/%d is not 1/1, 1/2, 1/4 or 1/8", denom);
    if ((uint64_t)H * (uint64_t)W > max_pixels)
        return set_msg(msg, K_TOO_LARGE, "%ldx%ld pixels is more than the %llu allowed", W, H,
                       (unsigned long long)max_pixels);
    wk->err.truncated = 0;
    wk->err.message[0] = 0;
    if (setjmp(wk->err.jmp)) {
        jpeg_abort_decompress(ci);
        return set_msg(msg, wk->err.truncated ? K_TRUNCATED : K_CORRUPT, "%s", wk->err.message);
    }
    jpeg_mem_src(ci, data, (unsigned long)size);
    jpeg_read_header(ci, TRUE);
    if (ci->image_width != (JDIMENSION)W || ci->image_height != (JDIMENSION)H) {
        code = set_msg(msg, K_HEADER_MISMATCH,
                       "the JPEG header says %ux%u, the cache says %ldx%ld",
                       (unsigned)ci->image_width, (unsigned)ci->image_height, W, H);
        goto out;
    }
    if (ci->data_precision != 8) {
        code = set_msg(msg, K_UNSUPPORTED, "%d-bit samples (only 8-bit JPEGs decode here)",
                       ci->data_precision);
        goto out;
    }
    ci->out_color_space = JCS_RGB;
    ci->scale_num = 1;
    ci->scale_denom = (unsigned)denom;
    ci->dct_method = fast ? JDCT_IFAST : JDCT_ISLOW;
    /* plain chroma replication selects merged upsampling, which is unsafe with
     * skipping (libjpeg-turbo #915): fast decodes never skip or crop */
    ci->do_fancy_upsampling = fast ? FALSE : TRUE;
    jpeg_start_decompress(ci);
    JDIMENSION sh = ceil_div((JDIMENSION)H, (JDIMENSION)denom);
    JDIMENSION sw = ceil_div((JDIMENSION)W, (JDIMENSION)denom);
    /* never trust the library to honour the scale (a lossless JPEG ignores it) */
    if (ci->output_width != sw || ci->output_height != sh || ci->output_components != 3 ||
        ci->out_color_components != 3) {
        code = set_msg(msg, K_BAD_SCALE,
                       "libjpeg decodes %ux%ux%d, expected %ux%ux3 (scale 1/%d)",
                       (unsigned)ci->output_width, (unsigned)ci->output_height,
                       ci->output_components, (unsigned)sw, (unsigned)sh, denom);
        goto out;
    }
    /* every view's box on the scaled grid (rounded outwards), and their union */
    JDIMENSION vy0[MAX_VIEWS], vx0[MAX_VIEWS], vy1[MAX_VIEWS], vx1[MAX_VIEWS];
    JDIMENSION uy0 = sh, ux0 = sw, uy1 = 0, ux1 = 0;
    for (int i = 0; i < v->views; i++) {
        const int64_t *b = v->box + 4 * i;
        vy0[i] = (JDIMENSION)(b[0] / denom);
        vx0[i] = (JDIMENSION)(b[1] / denom);
        vy1[i] = ceil_div((JDIMENSION)(b[0] + b[2]), (JDIMENSION)denom);
        vx1[i] = ceil_div((JDIMENSION)(b[1] + b[3]), (JDIMENSION)denom);
        if (vy1[i] > sh)
            vy1[i] = sh;
        if (vx1[i] > sw)
            vx1[i] = sw;
        if (vy0[i] < uy0)
            uy0 = vy0[i];
        if (vx0[i] < ux0)
            ux0 = vx0[i];
        if (vy1[i] > uy1)
            uy1 = vy1[i];
        if (vx1[i] > ux1)
            ux1 = vx1[i];
    }
    JDIMENSION wy0 = uy0 > CONTEXT ? uy0 - CONTEXT : 0;
    JDIMENSION wx0 = ux0 > CONTEXT ? ux0 - CONTEXT : 0;
    JDIMENSION wy1 = uy1 + CONTEXT < sh ? uy1 + CONTEXT : sh;
    JDIMENSION wx1 = ux1 + CONTEXT < sw ? ux1 + CONTEXT : sw;
    if (!region) {
        wy0 = wx0 = 0;
        wy1 = sh;
        wx1 = sw;
    } else if (fast) {
        wy0 = wx0 = 0;
        wx1 = sw;
    }
    JDIMENSION xoff = wx0, cw = wx1 - wx0;
    if (xoff > 0 || cw < sw)
        jpeg_crop_scanline(ci, &xoff, &cw);
    if (xoff > wx0 || xoff + cw < wx1 || xoff + cw > sw || ci->output_width != cw) {
        code = set_msg(msg, K_BAD_SCALE, "libjpeg cropped columns %u..%u for %u..%u",
                       (unsigned)xoff, (unsigned)(xoff + cw), (unsigned)wx0, (unsigned)wx1);
        goto out;
    }
    size_t row_bytes = (size_t)cw * 3, rows = wy1 - wy0;
    if ((uint64_t)rows * cw > max_pixels) {
        code = set_msg(msg, K_TOO_LARGE, "a %ux%u region is more than the %llu pixels allowed",
                       (unsigned)cw, (unsigned)rows, (unsigned long long)max_pixels);
        goto out;
    }
    uint8_t *buf = buf_get(&wk->decoded, rows * row_bytes);
    uint8_t *spare = buf_get(&wk->spare, row_bytes);
    if (!buf || !spare) {
        code = set_msg(msg, K_NO_MEMORY, "out of memory for a %ux%u region", (unsigned)cw,
                       (unsigned)rows);
        goto out;
    }
    if (wy0 > 0 && (jpeg_skip_scanlines(ci, wy0) != wy0 || ci->output_scanline != wy0)) {
        code = set_msg(msg, K_BAD_SCALE, "libjpeg did not skip to row %u", (unsigned)wy0);
        goto out;
    }
    while (ci->output_scanline < wy1) {
        JSAMPROW rowp[16];
        JDIMENSION at = ci->output_scanline, n = wy1 - at < 16 ? wy1 - at : 16;
        for (JDIMENSION i = 0; i < n; i++)
            rowp[i] = buf + (size_t)(at - wy0 + i) * row_bytes;
        JDIMENSION got = jpeg_read_scanlines(ci, rowp, n);
        if (got == 0 || got > n) {
            code = set_msg(msg, K_CORRUPT, "libjpeg returned no row at %u", (unsigned)at);
            goto out;
        }
    }
    if (!region || !ends_at_eoi(data, size)) {
        /* data that does not end at the end-of-image marker is decoded to the end, so that
         * truncation is an error whichever crop is asked for */
        while (ci->output_scanline < ci->output_height) {
            JSAMPROW rowp[1] = {spare};
            if (jpeg_read_scanlines(ci, rowp, 1) != 1) {
                code = set_msg(msg, K_CORRUPT, "libjpeg returned no row at %u",
                               (unsigned)ci->output_scanline);
                goto out;
            }
        }
        jpeg_finish_decompress(ci);
    }
    for (int i = 0; i < v->views; i++) {
        const uint8_t *src = buf + (size_t)(vy0[i] - wy0) * row_bytes + (size_t)(vx0[i] - xoff) * 3;
        int ih = (int)(vy1[i] - vy0[i]), iw = (int)(vx1[i] - vx0[i]);
        if (resize_box(&wk->rs, src, (ptrdiff_t)row_bytes, ih, iw, 3, 0.0, ih, 0.0, iw,
                       v->out[i], (ptrdiff_t)v->ow[i] * 3, v->oh[i], v->ow[i])) {
            code = set_msg(msg, K_NO_MEMORY, "out of memory resizing");
            goto out;
        }
    }
out:
    jpeg_abort_decompress(ci);
    return code;
}

/* Full-range (JFIF) YCbCr -> RGB in 13-bit fixed point: R = Y + 1.402 Cr',
 * G = Y - 0.344136 Cb' - 0.714136 Cr', B = Y + 1.772 Cb' (Cb' = Cb - 128, Cr' = Cr - 128). */
#define YCC_BITS 13
#define YCC_R_CR 11485
#define YCC_G_CB (-2819)
#define YCC_G_CR (-5850)
#define YCC_B_CB 14516

static inline uint8_t clamp8(int32_t v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

static void ycc_to_rgb(const uint8_t *restrict y, const uint8_t *restrict cb,
                       const uint8_t *restrict cr, size_t n, uint8_t *restrict out) {
    size_t i = 0;
#if defined(__SSE2__)
    /* (Cb', Cr') pairs times per-channel coefficient pairs with pmaddwd; pixels leave as
     * RGBX words stored 4 bytes at a time (the X overwritten by the next pixel) */
#define PAIR(a, b) _mm_set1_epi32((int32_t)((uint32_t)(uint16_t)(a) | ((uint32_t)(uint16_t)(b) << 16)))
    const __m128i zero = _mm_setzero_si128(), c128 = _mm_set1_epi16(128);
    const __m128i half = _mm_set1_epi32(1 << (YCC_BITS - 1));
    const __m128i kr = PAIR(0, YCC_R_CR), kg = PAIR(YCC_G_CB, YCC_G_CR), kb = PAIR(YCC_B_CB, 0);
#undef PAIR
    for (; i + 8 < n; i += 8) { /* "<": the last pixel's 4-byte store stays inside out */
        __m128i vy = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(y + i)), zero);
        __m128i vb = _mm_sub_epi16(
            _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(cb + i)), zero), c128);
        __m128i vr = _mm_sub_epi16(
            _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(cr + i)), zero), c128);
        __m128i lo = _mm_unpacklo_epi16(vb, vr), hi = _mm_unpackhi_epi16(vb, vr);
        __m128i ch[3];
        const __m128i *k[3] = {&kr, &kg, &kb};
        for (int c = 0; c < 3; c++) {
            __m128i l = _mm_srai_epi32(_mm_add_epi32(_mm_madd_epi16(lo, *k[c]), half), YCC_BITS);
            __m128i h = _mm_srai_epi32(_mm_add_epi32(_mm_madd_epi16(hi, *k[c]), half), YCC_BITS);
            __m128i v = _mm_add_epi16(_mm_packs_epi32(l, h), vy);
            ch[c] = _mm_packus_epi16(v, v);
        }
        __m128i rg = _mm_unpacklo_epi8(ch[0], ch[1]), bx = _mm_unpacklo_epi8(ch[2], zero);
        uint32_t px[8];
        _mm_storeu_si128((__m128i *)px, _mm_unpacklo_epi16(rg, bx));
        _mm_storeu_si128((__m128i *)(px + 4), _mm_unpackhi_epi16(rg, bx));
        for (int p = 0; p < 8; p++)
            memcpy(out + 3 * (i + p), &px[p], 4);
    }
#endif
    for (; i < n; i++) {
        int32_t yy = y[i], b = cb[i] - 128, r = cr[i] - 128, h = 1 << (YCC_BITS - 1);
        out[3 * i] = clamp8(yy + ((YCC_R_CR * r + h) >> YCC_BITS));
        out[3 * i + 1] = clamp8(yy + ((YCC_G_CB * b + YCC_G_CR * r + h) >> YCC_BITS));
        out[3 * i + 2] = clamp8(yy + ((YCC_B_CB * b + h) >> YCC_BITS));
    }
}

/* One chroma plane's share of a luma box: the covering chroma rows/columns and the box's
 * fractional position inside them (chroma pixel k covers luma pixels 2k and 2k + 1). */
static void chroma_span(int64_t start, int64_t len, long n, long *lo, long *cnt, double *off,
                        double *ext) {
    long a = (long)(start / 2), b = (long)((start + len + 1) / 2);
    if (b > n)
        b = n;
    *lo = a;
    *cnt = b - a;
    *off = start / 2.0 - a;
    *ext = len / 2.0;
}

static int yuv_sample(Worker *wk, const uint8_t *data, size_t size, long H, long W,
                      const Views *v, uint64_t max_pixels, char *msg) {
    int code = check_boxes(v, H, W, msg);
    if (code)
        return code;
    if ((uint64_t)H * (uint64_t)W > max_pixels)
        return set_msg(msg, K_TOO_LARGE, "%ldx%ld pixels is more than the %llu allowed", W, H,
                       (unsigned long long)max_pixels);
    long ch = (H + 1) / 2, cw = (W + 1) / 2;
    size_t want = (size_t)H * W + 2 * (size_t)ch * cw;
    if (size != want)
        return set_msg(msg, K_BAD_SIZE, "%zu bytes of YUV 4:2:0 planes, expected %zu for %ldx%ld",
                       size, want, W, H);
    const uint8_t *Y = data, *Cb = data + (size_t)H * W, *Cr = Cb + (size_t)ch * cw;
    for (int i = 0; i < v->views; i++) {
        const int64_t *b = v->box + 4 * i;
        int oh = v->oh[i], ow = v->ow[i];
        size_t n = (size_t)oh * ow;
        uint8_t *p = buf_get(&wk->planes, 3 * n);
        if (!p)
            return set_msg(msg, K_NO_MEMORY, "out of memory resizing");
        long ry, rn_y, rx, rn_x;
        double oy, ey, ox, ex;
        chroma_span(b[0], b[2], ch, &ry, &rn_y, &oy, &ey);
        chroma_span(b[1], b[3], cw, &rx, &rn_x, &ox, &ex);
        size_t c_at = (size_t)ry * cw + rx;
        if (resize_box(&wk->rs, Y + (size_t)b[0] * W + b[1], W, (int)b[2], (int)b[3], 1, 0.0,
                       (double)b[2], 0.0, (double)b[3], p, ow, oh, ow) ||
            resize_box(&wk->rs, Cb + c_at, cw, (int)rn_y, (int)rn_x, 1, oy, ey, ox, ex, p + n, ow,
                       oh, ow) ||
            resize_box(&wk->rs, Cr + c_at, cw, (int)rn_y, (int)rn_x, 1, oy, ey, ox, ex,
                       p + 2 * n, ow, oh, ow))
            return set_msg(msg, K_NO_MEMORY, "out of memory resizing");
        ycc_to_rgb(p, p + n, p + 2 * n, n, v->out[i]);
    }
    return K_OK;
}

/* ------------------------------------------------------------ Python interface -- */

static int Worker_init(Worker *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    if (self->cinfo_ready)
        return 0;
    self->cinfo.err = jpeg_std_error(&self->err.pub);
    self->err.pub.error_exit = on_error_exit;
    self->err.pub.emit_message = on_emit_message;
    self->err.pub.output_message = on_output_message;
    if (setjmp(self->err.jmp)) {
        PyErr_Format(PyExc_MemoryError, "cannot create a JPEG decompressor: %s",
                     self->err.message);
        return -1;
    }
    jpeg_create_decompress(&self->cinfo);
    self->cinfo_ready = 1;
    return 0;
}

static void Worker_dealloc(Worker *self) {
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->cinfo_ready)
        jpeg_destroy_decompress(&self->cinfo);
    resize_scratch_free(&self->rs);
    buf_free(&self->decoded);
    buf_free(&self->spare);
    buf_free(&self->planes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

typedef struct {
    Py_ssize_t k;
    int code;
    char msg[MSG_LEN];
} Failure;

/* A read-only C-contiguous buffer of at least n items of itemsize bytes. */
static int get_array(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t n,
                     const char *name, int writable) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                                          (writable ? PyBUF_WRITABLE : 0)))
        return -1;
    if (view->itemsize != itemsize || view->len < n * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected at least %zd items of %zd bytes, got %zd "
                     "bytes of %zd-byte items", name, n, itemsize, view->len, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(Worker_run_doc,
"run(table, boxes, denoms, outs, out_sizes, lo, hi, region, fast, max_pixels)\n"
"    -> list[(k, code, message)]\n\n"
"Decode samples lo..hi-1 of a batch into their slots, with the GIL released.\n"
"table: uint64 (5, n), rows per sample: address and size of the stored bytes (kept\n"
"alive by the caller), codec, height, width; boxes: int64 (n, views, 4) full-resolution\n"
"(top, left, height, width); denoms: int64 DCT scale denominators (JPEG only);\n"
"outs: one writable C-contiguous uint8 [B, h, w, 3] buffer per view, out_sizes the\n"
"(h, w) of each. Samples of other codecs are left alone. Returns the failures.");

static PyObject *Worker_run(Worker *self, PyObject *args) {
    PyObject *o_table, *o_box, *o_denom, *outs, *out_sizes;
    Py_ssize_t lo, hi;
    int region, fast;
    unsigned long long max_pixels;
    if (!PyArg_ParseTuple(args, "OOOOOnnppK", &o_table, &o_box, &o_denom, &outs, &out_sizes,
                          &lo, &hi, &region, &fast, &max_pixels))
        return NULL;
    if (!PyTuple_Check(outs) || !PyTuple_Check(out_sizes) ||
        PyTuple_GET_SIZE(outs) != PyTuple_GET_SIZE(out_sizes)) {
        PyErr_SetString(PyExc_TypeError, "outs and out_sizes: tuples of one item per view");
        return NULL;
    }
    Py_ssize_t views = PyTuple_GET_SIZE(outs);
    if (views < 1 || views > MAX_VIEWS) {
        PyErr_Format(PyExc_ValueError, "between 1 and %d views, got %zd", MAX_VIEWS, views);
        return NULL;
    }
    if (lo < 0 || hi < lo) {
        PyErr_Format(PyExc_ValueError, "bad slice %zd..%zd", lo, hi);
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a kernel Worker is not shareable between threads");
        return NULL;
    }
    int oh[MAX_VIEWS], ow[MAX_VIEWS];
    for (Py_ssize_t i = 0; i < views; i++)
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(out_sizes, i), "ii", &oh[i], &ow[i]))
            return NULL;
    Py_buffer b[3], ob[MAX_VIEWS];
    int got = 0, got_out = 0;
    PyObject *result = NULL;
    Failure *fails = NULL;
    Py_ssize_t n_fail = 0;
    PyObject *objs[3] = {o_table, o_box, o_denom};
    const Py_ssize_t counts[3] = {5 * hi, hi * views * 4, hi};
    static const char *names[3] = {"table", "boxes", "denoms"};
    for (; got < 3; got++)
        if (get_array(objs[got], &b[got], 8, counts[got], names[got], 0))
            goto done;
    Py_ssize_t n = b[0].len / 40; /* the table's row length: rows are n apart */
    if (b[0].len % 40 || b[0].ndim != 2 || b[0].shape[0] != 5) {
        PyErr_SetString(PyExc_ValueError, "table: expected uint64 (5, n)");
        goto done;
    }
    for (; got_out < views; got_out++) {
        Py_ssize_t i = got_out;
        if (oh[i] < 1 || ow[i] < 1 || oh[i] > MAX_OUT_SIDE || ow[i] > MAX_OUT_SIDE) {
            PyErr_Format(PyExc_ValueError, "view %zd: output size %dx%d (1 to %d a side)", i,
                         ow[i], oh[i], MAX_OUT_SIDE);
            goto done;
        }
        if (get_array(PyTuple_GET_ITEM(outs, i), &ob[i], 1, hi * (Py_ssize_t)oh[i] * ow[i] * 3,
                      "outs", 1))
            goto done;
    }
    fails = PyMem_Calloc(hi - lo > 0 ? (size_t)(hi - lo) : 1, sizeof(Failure));
    if (!fails) {
        PyErr_NoMemory();
        goto done;
    }
    const uint64_t *addr = b[0].buf, *size = addr + n, *codec = addr + 2 * n,
                   *H = addr + 3 * n, *W = addr + 4 * n;
    const int64_t *box = b[1].buf, *denom = b[2].buf;
    self->busy = 1;
    struct timespec cpu0, cpu1;
    Py_BEGIN_ALLOW_THREADS
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    for (Py_ssize_t k = lo; k < hi; k++) {
        uint8_t *out[MAX_VIEWS];
        for (Py_ssize_t i = 0; i < views; i++)
            out[i] = (uint8_t *)ob[i].buf + (size_t)k * oh[i] * ow[i] * 3;
        Views v = {box + (size_t)k * views * 4, (int)views, out, oh, ow};
        Failure *f = &fails[n_fail];
        const uint8_t *data = (const uint8_t *)(uintptr_t)addr[k];
        int code = K_OK;
        if (codec[k] == CODEC_JPEG)
            code = jpeg_sample(self, data, (size_t)size[k], (long)H[k], (long)W[k],
                               (int)denom[k], &v, region, fast, max_pixels, f->msg);
        else if (codec[k] == CODEC_YUV420)
            code = yuv_sample(self, data, (size_t)size[k], (long)H[k], (long)W[k], &v,
                              max_pixels, f->msg);
        if (code) {
            f->k = k;
            f->code = code;
            n_fail++;
        }
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    Py_END_ALLOW_THREADS
    self->native_ns += (unsigned long long)((cpu1.tv_sec - cpu0.tv_sec) * 1000000000LL +
                                            (cpu1.tv_nsec - cpu0.tv_nsec));
    self->busy = 0;
    result = PyList_New(n_fail);
    if (!result)
        goto done;
    for (Py_ssize_t i = 0; i < n_fail; i++) {
        PyObject *item = Py_BuildValue("(nis)", fails[i].k, fails[i].code, fails[i].msg);
        if (!item) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    PyMem_Free(fails);
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&b[i]);
    for (int i = 0; i < got_out; i++)
        PyBuffer_Release(&ob[i]);
    return result;
}

PyDoc_STRVAR(resize_doc,
"resize(src, height, width, channels, dst, out_height, out_width)\n\n"
"Anti-aliased resize (Pillow's BILINEAR) of a C-contiguous uint8 [height, width,\n"
"channels] image into a C-contiguous uint8 [out_height, out_width, channels] buffer,\n"
"with the GIL released. channels is 1 or 3.");

static PyObject *Worker_resize(Worker *self, PyObject *args) {
    PyObject *o_src, *o_dst;
    int h, w, c, oh, ow;
    if (!PyArg_ParseTuple(args, "OiiiOii", &o_src, &h, &w, &c, &o_dst, &oh, &ow))
        return NULL;
    if (h < 1 || w < 1 || oh < 1 || ow < 1 || oh > MAX_OUT_SIDE || ow > MAX_OUT_SIDE ||
        (c != 1 && c != 3)) {
        PyErr_Format(PyExc_ValueError, "resize: bad sizes %dx%dx%d -> %dx%d", h, w, c, oh, ow);
        return NULL;
    }
    Py_buffer src, dst;
    if (get_array(o_src, &src, 1, (Py_ssize_t)h * w * c, "src", 0))
        return NULL;
    if (get_array(o_dst, &dst, 1, (Py_ssize_t)oh * ow * c, "dst", 1)) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (self->busy) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_RuntimeError, "a kernel Worker is not shareable between threads");
        return NULL;
    }
    int rc;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = resize_box(&self->rs, src.buf, (ptrdiff_t)w * c, h, w, c, 0.0, h, 0.0, w, dst.buf,
                    (ptrdiff_t)ow * c, oh, ow);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (rc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef Worker_methods[] = {
    {"run", (PyCFunction)Worker_run, METH_VARARGS, Worker_run_doc},
    {"resize", (PyCFunction)Worker_resize, METH_VARARGS, resize_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Worker_members[] = {
    {"native_ns", T_ULONGLONG, offsetof(Worker, native_ns), READONLY,
     "CPU nanoseconds this worker's thread spent decoding in run(), the GIL released"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject WorkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "slipstream.decode._kernel.Worker",
    .tp_basicsize = sizeof(Worker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One decode thread's libjpeg decompressor and scratch memory (one per thread).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Worker_init,
    .tp_dealloc = (destructor)Worker_dealloc,
    .tp_methods = Worker_methods,
    .tp_members = Worker_members,
    .tp_weaklistoffset = offsetof(Worker, weakrefs),
};

PyDoc_STRVAR(values_doc,
"values(addresses, sizes, n, text) -> list\n\n"
"The first n byte ranges (uint64 addresses and sizes, memory the caller keeps alive) as\n"
"bytes objects, or as str decoded from UTF-8 when text is true (UnicodeDecodeError if\n"
"one is not UTF-8). One call for a batch of a string or bytes field.");

static PyObject *kernel_values(PyObject *mod, PyObject *args) {
    PyObject *o_addr, *o_size;
    Py_ssize_t n;
    int text;
    (void)mod;
    if (!PyArg_ParseTuple(args, "OOnp", &o_addr, &o_size, &n, &text))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "values: negative count");
        return NULL;
    }
    Py_buffer a, z;
    if (get_array(o_addr, &a, 8, n, "addresses", 0))
        return NULL;
    if (get_array(o_size, &z, 8, n, "sizes", 0)) {
        PyBuffer_Release(&a);
        return NULL;
    }
    const uint64_t *addr = a.buf, *size = z.buf;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        const char *p = (const char *)(uintptr_t)addr[i];
        Py_ssize_t len = (Py_ssize_t)size[i];
        PyObject *v = text ? PyUnicode_DecodeUTF8(p, len, "strict")
                           : PyBytes_FromStringAndSize(p, len);
        if (!v)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, v);
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&z);
    return out;
}

PyDoc_STRVAR(plan_rrc_doc,
"plan_rrc(stream_key, indices, heights, widths, by_index, scale_lo, scale_span,\n"
"         log_ratio_lo, log_ratio_span, ratio_min, ratio_max, out_h, out_w, boxes,\n"
"         denoms) -> None\n\n"
"Random resized crop boxes of a batch into boxes (int64 (n, 4)), drawn from the random\n"
"stream stream_key (slipstream._rng.stream_key) per sample index; with denoms (int64\n"
"(n,)) not None, also each box's DCT scale for an out_h x out_w output and the box\n"
"snapped to its grid (geometry.plan_crops). heights/widths: uint32, per batch position,\n"
"or whole columns read at indices when by_index is true.");

PyDoc_STRVAR(heap_chunks_doc,
"heap_chunks(offsets, sizes, indices, chunk_bytes, n_chunks) -> list[int]\n\n"
"The chunks (ascending, each once) that values indices (int64) of a heap lie in;\n"
"offsets uint64 and sizes uint32/uint64 per value. IndexError for an index out of range.");

PyDoc_STRVAR(heap_locate_doc,
"heap_locate(offsets, sizes, indices, chunk_bytes, bases, addresses) -> list[int]\n\n"
"Each value's address (base of its first chunk + its offset in it) into addresses\n"
"(writable uint64 (n,)); bases: each chunk's mapped address, 0 where not mapped\n"
"(RuntimeError if a value needs one). Returns the positions of values that continue\n"
"into the next chunk (the caller joins those).");

PyDoc_STRVAR(heap_gather_doc,
"heap_gather(offsets, sizes, codecs, heights, widths, indices, chunk_bytes, bases,\n"
"            native_codecs, table) -> (straddling, other_codecs)\n\n"
"An image column's samples as the table Worker.run reads: rows address, size, codec,\n"
"height, width (writable uint64 (5, n)). Returns the positions of values continuing\n"
"into the next chunk (the caller joins them and fixes their address) and of samples\n"
"whose codec is not in the native_codecs bit mask.");

PyDoc_STRVAR(stat_files_doc,
"stat_files(paths) -> list[(inode, size, mtime_ns) | None]\n\n"
"stat() every path with the GIL released; None where the file does not exist, OSError\n"
"for any other failure.");

static PyMethodDef kernel_methods[] = {
    {"values", kernel_values, METH_VARARGS, values_doc},
    {"plan_rrc", kernel_plan_rrc, METH_VARARGS, plan_rrc_doc},
    {"heap_chunks", kernel_heap_chunks, METH_VARARGS, heap_chunks_doc},
    {"heap_locate", kernel_heap_locate, METH_VARARGS, heap_locate_doc},
    {"stat_files", kernel_stat_files, METH_O, stat_files_doc},
    {"heap_gather", kernel_heap_gather, METH_VARARGS, heap_gather_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel",
    "slipstream's native decode kernel (see slipstream/decode/kernel.py).", -1, kernel_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) {
    if (PyType_Ready(&WorkerType) < 0)
        return NULL;
    const char *simd = "none";
#if defined(__SSE2__)
    simd = "sse2";
#endif
#if defined(HAVE_AVX2_VARIANT)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && !getenv("SLIPSTREAM_KERNEL_NO_AVX2")) {
        resample_row_simd = resample_row_avx2;
        simd = "avx2";
    }
#endif
    PyObject *m = PyModule_Create(&kernel_module);
    if (!m)
        return NULL;
    Py_INCREF(&WorkerType);
    if (PyModule_AddObject(m, "Worker", (PyObject *)&WorkerType) < 0 ||
        PyModule_AddIntConstant(m, "LIBJPEG_VERSION", JPEG_LIB_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "CONTEXT", CONTEXT) < 0 ||
        PyModule_AddStringConstant(m, "SIMD", simd) < 0) {
        Py_DECREF(&WorkerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
