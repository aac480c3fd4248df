/* NanoDet-Plus's box decoding and upstream's warp_boxes mapping: the compiled kernels of
 * nanodet_infer.families.nanodet_plus.decode.decode_boxes and .resize.boxes_to_original (see
 * decode_kernel.py, which calls them and holds the docs).
 *
 * Exactly the arithmetic of the numpy paths (build flags forbid FMA contraction):
 *   dfl_boxes:  per side, total = w0 + w1 + ... + wR and expected = (w1 * 1) + (w2 * 2) + ... in float32, in
 *               that order; distance = (expected / total) * stride; box = (-l + x, -t + y, r + x, b + y) clamped
 *               to [0, W] x [0, H]. The softmax weights w (numpy's exp) arrive computed.
 *   warp_boxes: the 4 corners through the 3x3 matrix in float64, (m0 * x + m1 * y) + m2 over the same for the
 *               last row, min/max per axis, clipped to the image, rounded to float32.
 * max/min propagate NaN as numpy's do.
 *
 * No numpy headers: arrays arrive through the buffer protocol (C-contiguous, checked by the caller).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static inline float max_f(float a, float b) { return (a != a || a >= b) ? a : b; }
static inline float min_f(float a, float b) { return (a != a || a <= b) ? a : b; }
static inline double max_d(double a, double b) { return (a != a || a >= b) ? a : b; }
static inline double min_d(double a, double b) { return (a != a || a <= b) ? a : b; }

/* dfl_boxes(weights f32 [(R+1)*K*4] bin-major, priors f32 [K*3], reg_max, width f32, height f32, out f32 [K*4]) */
static PyObject *dfl_boxes(PyObject *self, PyObject *args) {
    Py_buffer weights, priors, out;
    Py_ssize_t reg_max;
    float width, height;
    if (!PyArg_ParseTuple(args, "y*y*nffw*", &weights, &priors, &reg_max, &width, &height, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t k = priors.len / (Py_ssize_t)(3 * sizeof(float));
    Py_ssize_t bins = reg_max + 1;
    if (reg_max < 1 || priors.len != k * 3 * (Py_ssize_t)sizeof(float) ||
        weights.len != k * 4 * bins * (Py_ssize_t)sizeof(float) || out.len != k * 4 * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "dfl_boxes: inconsistent buffer sizes");
        goto done;
    }
    const float *w = (const float *)weights.buf;
    const float *p = (const float *)priors.buf;
    float *box = (float *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < k; ++row) {
        float d[4];
        for (int side = 0; side < 4; ++side) {
            const float *v = w + row * 4 + side; /* bin b at v[b * plane] */
            Py_ssize_t plane = k * 4;
            float total = v[0], expected = 0.0f;
            for (Py_ssize_t b = 1; b < bins; ++b) {
                total += v[b * plane];
                float scaled = v[b * plane] * (float)b;
                expected += scaled;
            }
            float mean = expected / total;
            d[side] = mean * p[3 * row + 2];
        }
        float x = p[3 * row], y = p[3 * row + 1];
        float *o = box + 4 * row;
        o[0] = min_f(max_f(-d[0] + x, 0.0f), width);
        o[1] = min_f(max_f(-d[1] + y, 0.0f), height);
        o[2] = min_f(max_f(d[2] + x, 0.0f), width);
        o[3] = min_f(max_f(d[3] + y, 0.0f), height);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&weights);
    PyBuffer_Release(&priors);
    PyBuffer_Release(&out);
    return result;
}

/* warp_boxes(boxes f32 [K*4], matrix f64 [9], width f64, height f64, out f32 [K*4]) */
static PyObject *warp_boxes(PyObject *self, PyObject *args) {
    Py_buffer boxes, matrix, out;
    double width, height;
    if (!PyArg_ParseTuple(args, "y*y*ddw*", &boxes, &matrix, &width, &height, &out)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t k = boxes.len / (Py_ssize_t)(4 * sizeof(float));
    if (boxes.len != k * 4 * (Py_ssize_t)sizeof(float) || matrix.len != 9 * (Py_ssize_t)sizeof(double) ||
        out.len != boxes.len) {
        PyErr_SetString(PyExc_ValueError, "warp_boxes: inconsistent buffer sizes");
        goto done;
    }
    const float *in = (const float *)boxes.buf;
    const double *m = (const double *)matrix.buf;
    float *o = (float *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t row = 0; row < k; ++row) {
        const float *b = in + 4 * row;
        double xs[4] = {b[0], b[2], b[0], b[2]}, ys[4] = {b[1], b[3], b[3], b[1]};
        double tx[4], ty[4];
        for (int c = 0; c < 4; ++c) {
            double a = m[6] * xs[c], e = m[7] * ys[c];
            double den = (a + e) + m[8];
            double ax = m[0] * xs[c], bx = m[1] * ys[c];
            tx[c] = ((ax + bx) + m[2]) / den;
            double ay = m[3] * xs[c], by = m[4] * ys[c];
            ty[c] = ((ay + by) + m[5]) / den;
        }
        double lo_x = tx[0], lo_y = ty[0], hi_x = tx[0], hi_y = ty[0];
        for (int c = 1; c < 4; ++c) {
            lo_x = min_d(lo_x, tx[c]);
            lo_y = min_d(lo_y, ty[c]);
            hi_x = max_d(hi_x, tx[c]);
            hi_y = max_d(hi_y, ty[c]);
        }
        float *r = o + 4 * row;
        r[0] = (float)min_d(max_d(lo_x, 0.0), width);
        r[1] = (float)min_d(max_d(lo_y, 0.0), height);
        r[2] = (float)min_d(max_d(hi_x, 0.0), width);
        r[3] = (float)min_d(max_d(hi_y, 0.0), height);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&boxes);
    PyBuffer_Release(&matrix);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"dfl_boxes", dfl_boxes, METH_VARARGS, "NanoDet-Plus DFL expectation to clamped boxes (see decode_kernel.py)."},
    {"warp_boxes", warp_boxes, METH_VARARGS, "Boxes through the inverse warp matrix (see decode_kernel.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_decode_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__decode_kernel(void) { return PyModule_Create(&module); }
