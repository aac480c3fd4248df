/* Preprocessing kernels: lookup (nanodet_infer.preprocess: a uint8 image through per-channel tables into float32
 * planes, cv2.LUT's values) and transform (torchvision's transform of a BGR uint8 image, the per-channel normalisation table, then torch's bilinear resize
 * (F.interpolate, align_corners=False, no antialias), fused), the compiled kernels of
 * nanodet_infer.families.torchvision_common.transform (which holds the docs and the numpy path, where the
 * table is applied first to whole planes and bilinear_resize follows).
 *
 * x[h, w] below is tables[c][image[h, w, 2 - c]] (RGB plane c of the BGR image): the same float32 the numpy path
 * resizes. Exactly the arithmetic of the numpy path (build flags forbid FMA contraction): per output pixel, width
 * first,
 *   t = (float)((double)x[h, w0] * (double)lw0 + (double)(float)(x[h, w1] * lw1))   for the rows h0 and h1,
 *   y = (float)((double)t0 * (double)lh0 + (double)(float)(t1 * lh1)),
 * the float32 products exact in double and each sum rounded to double, then to float32, as numpy computes
 * np.add(np.multiply(a, b, dtype=float64), c, out=float32). The width pass of a source row is kept for the next
 * output rows (two rows cached; the source rows of consecutive output rows never decrease).
 *
 * No numpy headers: arrays arrive through the buffer protocol (C-contiguous, checked by the caller).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

static inline float fma_like_numpy(float a, float b, float c) {
    return (float)((double)a * (double)b + (double)c);
}

static void width_pass(const uint8_t *row, const float *table, Py_ssize_t out_w, const int64_t *w0,
                       const int64_t *w1, const float *lw0, const float *lw1, float *across) {
    for (Py_ssize_t x = 0; x < out_w; x++) {
        float second = table[row[3 * w1[x]]] * lw1[x];
        across[x] = fma_like_numpy(table[row[3 * w0[x]]], lw0[x], second);
    }
}

/* transform(image u8 [H*W*3] BGR, in_h, in_w, tables f32 [3*256] (RGB planes), w0 i64 [W'], w1, lw0 f32 [W'], lw1,
 * h0 i64 [H'], h1, lh0 f32 [H'], lh1, out f32 [3*Hc*Wc], Hc, Wc) -> None: the resized planes written into the top-left
 * H' x W' of each Hc x Wc canvas plane (the padding is left as it is). Indices must lie inside the image (checked). */
static PyObject *transform(PyObject *self, PyObject *args) {
    Py_buffer image, tables, w0, w1, lw0, lw1, h0, h1, lh0, lh1, out;
    Py_ssize_t in_h, in_w, canvas_h, canvas_w, channels = 3;
    if (!PyArg_ParseTuple(args, "y*nny*y*y*y*y*y*y*y*y*w*nn", &image, &in_h, &in_w, &tables, &w0, &w1, &lw0, &lw1,
                          &h0, &h1, &lh0, &lh1, &out, &canvas_h, &canvas_w))
        return NULL;
    Py_buffer *all[] = {&image, &tables, &w0, &w1, &lw0, &lw1, &h0, &h1, &lh0, &lh1, &out};
    PyObject *result = NULL;
    float *cache = NULL;
    Py_ssize_t out_w = w0.len / (Py_ssize_t)sizeof(int64_t), out_h = h0.len / (Py_ssize_t)sizeof(int64_t);
    if (in_h < 1 || in_w < 1 || image.len != in_h * in_w * channels ||
        tables.len != channels * 256 * (Py_ssize_t)sizeof(float) ||
        w1.len != w0.len || h1.len != h0.len || lw0.len != out_w * (Py_ssize_t)sizeof(float) ||
        lw1.len != lw0.len || lh0.len != out_h * (Py_ssize_t)sizeof(float) || lh1.len != lh0.len ||
        out_h > canvas_h || out_w > canvas_w || out.len != channels * canvas_h * canvas_w * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "transform: inconsistent buffer sizes");
        goto done;
    }
    const int64_t *iw0 = w0.buf, *iw1 = w1.buf, *ih0 = h0.buf, *ih1 = h1.buf;
    for (Py_ssize_t i = 0; i < out_w; i++)
        if (iw0[i] < 0 || iw0[i] >= in_w || iw1[i] < 0 || iw1[i] >= in_w) {
            PyErr_SetString(PyExc_ValueError, "transform: a width index is outside the image");
            goto done;
        }
    for (Py_ssize_t i = 0; i < out_h; i++)
        if (ih0[i] < 0 || ih0[i] >= in_h || ih1[i] < 0 || ih1[i] >= in_h) {
            PyErr_SetString(PyExc_ValueError, "transform: a height index is outside the image");
            goto done;
        }
    cache = malloc(sizeof(float) * (size_t)(2 * (out_w > 0 ? out_w : 1)));
    if (cache == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *src = image.buf;
    const float *table = tables.buf, *flw0 = lw0.buf, *flw1 = lw1.buf, *flh0 = lh0.buf, *flh1 = lh1.buf;
    float *dst = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < channels; c++) {
        const uint8_t *plane = src + (channels - 1 - c); /* RGB plane c is BGR channel 2 - c */
        const float *lookup = table + 256 * c;
        float *rows[2] = {cache, cache + out_w};
        Py_ssize_t held[2] = {-1, -1};
        for (Py_ssize_t y = 0; y < out_h; y++) {
            const float *pair[2];
            Py_ssize_t want[2] = {ih0[y], ih1[y]};
            for (int k = 0; k < 2; k++) {
                int slot = held[0] == want[k] ? 0 : held[1] == want[k] ? 1 : -1;
                if (slot < 0) { /* replace the slot the other row of this pixel row does not use */
                    slot = (k == 1 && held[0] == want[0]) ? 1 : (k == 1 && held[1] == want[0]) ? 0 : k;
                    width_pass(plane + want[k] * in_w * channels, lookup, out_w, iw0, iw1, flw0, flw1, rows[slot]);
                    held[slot] = want[k];
                }
                pair[k] = rows[slot];
            }
            float *line = dst + (c * canvas_h + y) * canvas_w;
            for (Py_ssize_t x = 0; x < out_w; x++) {
                float second = pair[1][x] * flh1[y];
                line[x] = fma_like_numpy(pair[0][x], flh0[y], second);
            }
        }
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    free(cache);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        PyBuffer_Release(all[i]);
    return result;
}

/* lookup(image u8 [h*w*3], h, w, tables f32 [3*256], reverse, out f32 [3*Hc*Wc], Hc, Wc) -> None: plane c of the
 * canvas, top-left h x w, is tables[c][image[y, x, reverse ? 2 - c : c]] (the padding is left as it is): the values
 * of cv2.LUT per plane (a table lookup has no arithmetic). */
static PyObject *lookup(PyObject *self, PyObject *args) {
    Py_buffer image, tables, out;
    Py_ssize_t h, w, canvas_h, canvas_w;
    int reverse;
    if (!PyArg_ParseTuple(args, "y*nny*pw*nn", &image, &h, &w, &tables, &reverse, &out, &canvas_h, &canvas_w))
        return NULL;
    PyObject *result = NULL;
    if (h < 0 || w < 0 || h > canvas_h || w > canvas_w || image.len != h * w * 3 ||
        tables.len != 3 * 256 * (Py_ssize_t)sizeof(float) ||
        out.len != 3 * canvas_h * canvas_w * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "lookup: inconsistent buffer sizes");
        goto done;
    }
    const uint8_t *src = image.buf;
    const float *table = tables.buf;
    float *dst = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t c = 0; c < 3; c++) {
        const uint8_t *channel = src + (reverse ? 2 - c : c);
        const float *plane_table = table + 256 * c;
        for (Py_ssize_t y = 0; y < h; y++) {
            const uint8_t *row = channel + 3 * w * y;
            float *line = dst + (c * canvas_h + y) * canvas_w;
            for (Py_ssize_t x = 0; x < w; x++)
                line[x] = plane_table[row[3 * x]];
        }
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&image);
    PyBuffer_Release(&tables);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"lookup", lookup, METH_VARARGS, "uint8 pixels through per-channel tables into float32 canvas planes."},
    {"transform", transform, METH_VARARGS, "torchvision's normalise + bilinear resize (see torchvision_common)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_preprocess_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__preprocess_kernel(void) { return PyModule_Create(&module); }
