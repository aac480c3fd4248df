/* Greedy class-aware NMS over candidates in a given visiting order: the compiled kernel of
 * nanodet_infer.nms.greedy_nms (see nanodet_infer/nms_kernel.py, which calls it and holds the docs).
 *
 * Exactly the arithmetic of the numpy path, in float32 (build flags forbid FMA contraction):
 *   shifted = box + (float)class_id * step          (upstream's offset trick, step = max_coordinate + 1)
 *   area    = (x2 - x1) * (y2 - y1)
 *   w = max(min(ax2, bx2) - max(ax1, bx1), 0), h likewise, inter = w * h
 *   iou     = inter / ((area_a + area_b) - inter),  suppressed when iou > threshold
 * max/min propagate NaN as numpy's do, so every comparison comes out as numpy's. A candidate is
 * dropped when its box is not finite, or when a kept candidate of the same class suppresses it.
 *
 * No numpy headers: arrays arrive through the buffer protocol (C-contiguous, checked by the caller).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static inline float np_max(float a, float b) { return (a != a || a >= b) ? a : b; }
static inline float np_min(float a, float b) { return (a != a || a <= b) ? a : b; }

/* greedy_nms(boxes f32 [M*4], order i64 [M], class_ids i64 [M], step f32, threshold f32, limit, out i64 [>=limit])
 * -> number of kept candidates written to out (candidate indices, in visiting order). */
static PyObject *greedy_nms(PyObject *self, PyObject *args) {
    Py_buffer boxes, order, classes, out;
    float step, threshold;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "y*y*y*ffnw*", &boxes, &order, &classes, &step, &threshold, &limit, &out))
        return NULL;
    Py_ssize_t m = classes.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t n = order.len / (Py_ssize_t)sizeof(int64_t);
    PyObject *result = NULL;
    float *kept = NULL;
    int64_t *kept_cls = NULL;
    if (boxes.len != m * 4 * (Py_ssize_t)sizeof(float) || limit < 0 ||
        out.len < limit * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "greedy_nms: inconsistent buffer sizes");
        goto done;
    }
    kept = (float *)malloc(sizeof(float) * 5 * (size_t)(limit > 0 ? limit : 1));
    kept_cls = (int64_t *)malloc(sizeof(int64_t) * (size_t)(limit > 0 ? limit : 1));
    if (kept == NULL || kept_cls == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *box = (const float *)boxes.buf;
    const int64_t *ord = (const int64_t *)order.buf;
    const int64_t *cls = (const int64_t *)classes.buf;
    int64_t *dst = (int64_t *)out.buf;
    Py_ssize_t count = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n && count < limit; ++r) {
        int64_t i = ord[r];
        if (i < 0 || i >= m) continue; /* the caller passes a permutation; never read out of bounds */
        const float *b = box + 4 * i;
        if (!(isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]))) continue;
        float offset = (float)cls[i] * step;
        float x1 = b[0] + offset, y1 = b[1] + offset, x2 = b[2] + offset, y2 = b[3] + offset;
        float area = (x2 - x1) * (y2 - y1);
        int suppressed = 0;
        for (Py_ssize_t k = 0; k < count; ++k) {
            if (kept_cls[k] != cls[i]) continue;
            const float *q = kept + 5 * k;
            float w = np_max(np_min(q[2], x2) - np_max(q[0], x1), 0.0f);
            float h = np_max(np_min(q[3], y2) - np_max(q[1], y1), 0.0f);
            float inter = w * h;
            float uni = (q[4] + area) - inter;
            if (inter / uni > threshold) {
                suppressed = 1;
                break;
            }
        }
        if (suppressed) continue;
        float *q = kept + 5 * count;
        q[0] = x1; q[1] = y1; q[2] = x2; q[3] = y2; q[4] = area;
        kept_cls[count] = cls[i];
        dst[count++] = i;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(count);
done:
    free(kept);
    free(kept_cls);
    PyBuffer_Release(&boxes);
    PyBuffer_Release(&order);
    PyBuffer_Release(&classes);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"greedy_nms", greedy_nms, METH_VARARGS, "Greedy class-aware NMS in a given order (see nanodet_infer.nms_kernel)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_nms_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__nms_kernel(void) { return PyModule_Create(&module); }
