"""Detector fidelity on upstream's own ONNX export, plus batching, threads and timings.

Reference: ``detections_upstream.json``, upstream's demo Predictor (PyTorch) at score 0.05 / IoU 0.6 /
max 100. Tolerances (original-image pixels): boxes within 0.01 px, scores within 1e-5, same labels;
a detection may differ only where :mod:`_parity` can name the reason (a score or IoU within 1e-5 of its
threshold, or a max_detections tie).
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import cv2
import numpy as np
import pytest
from _parity import SETTINGS, Det, assert_matches, compare, from_json
from conftest import SHAPES

from nanodet_infer import Detector

UPSTREAM = SHAPES / "upstream_export.onnx"
REFERENCE = json.loads((SHAPES / "detections_upstream.json").read_text())
CLASS_NAMES = REFERENCE["class_names"]
IMAGES = [SHAPES / "images" / item["file_name"] for item in REFERENCE["images"]]
ENGINES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module", params=ENGINES)
def detector(request) -> Detector:
    return Detector(UPSTREAM, backend=request.param, num_classes=3, class_names=CLASS_NAMES, num_threads=1, **SETTINGS)


@pytest.mark.parametrize("item", REFERENCE["images"], ids=[i["file_name"] for i in REFERENCE["images"]])
def test_reproduces_upstream_detections(detector, item):
    detections = detector(SHAPES / "images" / item["file_name"])
    assert detections.image_size == (item["width"], item["height"])
    assert detections.xyxy.dtype == np.float32 and detections.class_ids.dtype == np.int64
    assert_matches(detections, item["detections"])
    assert detections.class_names == tuple(CLASS_NAMES)


def test_facts(detector):
    meta = detector.metadata
    assert (meta.num_classes, meta.reg_max, meta.strides, meta.input_size) == (3, 7, (8, 16, 32, 64), (256, 256))
    assert not meta.dynamic_batch and not meta.dynamic_hw and not detector.keep_ratio
    assert detector.backend_name in ENGINES and detector.input_size == (256, 256)


@pytest.mark.parametrize("engine", ENGINES)
def test_num_classes_derived_from_the_output(engine):
    plain = Detector(UPSTREAM, backend=engine, num_threads=1, **SETTINGS)
    assert plain.metadata.num_classes == 3 and len(plain.metadata.class_names) == 3
    named = Detector(UPSTREAM, backend=engine, class_names=CLASS_NAMES, num_threads=1, **SETTINGS)
    assert named.metadata.class_names == tuple(CLASS_NAMES)
    item = REFERENCE["images"][0]
    assert_matches(plain(IMAGES[0]), item["detections"])


def test_array_input_equals_path_input(detector):
    image = cv2.imread(str(IMAGES[1]))
    by_path, by_array = detector(IMAGES[1]), detector(image)
    np.testing.assert_array_equal(by_path.xyxy, by_array.xyxy)
    np.testing.assert_array_equal(by_path.scores, by_array.scores)
    rgb_view = image[:, :, ::-1][:, :, ::-1]  # a non-contiguous view with the same pixels
    np.testing.assert_array_equal(detector(rgb_view).xyxy, by_path.xyxy)


def test_detect_with_another_inference_runs_the_same_pipeline(detector):
    calls = []

    def run(tensor):
        calls.append(tensor.shape)
        return detector.backend.run(tensor)

    own, other = detector(IMAGES[2]), detector.detect_with(run, IMAGES[2])
    assert calls == [(1, 3, 256, 256)]
    np.testing.assert_array_equal(own.xyxy, other.xyxy)
    np.testing.assert_array_equal(own.scores, other.scores)
    # the outputs of another engine are post-processed by this detector: no box without candidates
    silent = detector.detect_with(lambda x: [np.zeros_like(o) for o in detector.backend.run(x)], IMAGES[2])
    assert len(own) > 0 and len(silent) == 0


def test_batch_on_static_batch_model_equals_single_calls(detector):
    batch = detector.detect_batch(IMAGES[:6])
    assert len(batch) == 6
    for path, result in zip(IMAGES[:6], batch, strict=True):
        single = detector(path)
        np.testing.assert_array_equal(result.xyxy, single.xyxy)
        np.testing.assert_array_equal(result.scores, single.scores)
        np.testing.assert_array_equal(result.class_ids, single.class_ids)
    assert detector.detect_batch([]) == []


@pytest.mark.parametrize("keep_ratio", [False, True])
def test_detect_batch_runs_bounded_chunks_read_lazily(monkeypatch, keep_ratio):
    """On a dynamic-batch model at most max_batch images per inference, images read as the batches fill,
    and every result equals its single-image call (the batch axis is emulated: upstream's graph has B=1)."""
    from nanodet_infer.detector import MAX_BATCH

    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1, keep_ratio=keep_ratio, **SETTINGS)
    singles = [det(path) for path in IMAGES[:10]]
    monkeypatch.setattr(det, "_spec", replace(det._spec, metadata=det.metadata.replace(dynamic_batch=True)))
    run, calls, pulled = det._backend.run, [], []

    def batch_run(tensor):
        calls.append((tensor.shape[0], len(pulled)))
        outputs = [run(tensor[i : i + 1]) for i in range(tensor.shape[0])]
        return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]

    def paths():
        for path in IMAGES[:10]:
            pulled.append(path)
            yield path

    monkeypatch.setattr(det._backend, "run", batch_run)
    results = det.detect_batch(paths(), max_batch=4)
    assert calls == [(4, 4), (4, 8), (2, 10)]  # a static input: one canvas, so batches fill in order
    for single, batched in zip(singles, results, strict=True):
        np.testing.assert_array_equal(batched.xyxy, single.xyxy)
        np.testing.assert_array_equal(batched.scores, single.scores)
        np.testing.assert_array_equal(batched.class_ids, single.class_ids)
    calls.clear()
    assert len(det.detect_batch(IMAGES * 2)) == 40  # default: MAX_BATCH per inference
    assert [size for size, _ in calls] == [MAX_BATCH, 40 - MAX_BATCH]


def test_batch_bytes_are_capped_by_the_memory_budget(monkeypatch):
    """A batch never holds more network input than MAX_BATCH_BYTES (here: room for 3 canvases)."""
    from nanodet_infer import detector as detector_module

    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1, **SETTINGS)
    monkeypatch.setattr(det, "_spec", replace(det._spec, metadata=det.metadata.replace(dynamic_batch=True)))
    canvas_bytes = 3 * 4 * 256 * 256
    monkeypatch.setattr(detector_module, "MAX_BATCH_BYTES", 3 * canvas_bytes + canvas_bytes // 2)
    run, sizes = det._backend.run, []

    def batch_run(tensor):
        sizes.append(tensor.shape[0])
        outputs = [run(tensor[i : i + 1]) for i in range(tensor.shape[0])]
        return [np.concatenate(parts) for parts in zip(*outputs, strict=True)]

    monkeypatch.setattr(det._backend, "run", batch_run)
    assert len(det.detect_batch(IMAGES[:7], max_batch=32)) == 7
    assert sizes == [3, 3, 1]
    monkeypatch.setattr(detector_module, "MAX_BATCH_BYTES", canvas_bytes // 2)  # not even one: batches of one
    sizes.clear()
    det.detect_batch(IMAGES[:2])
    assert sizes == [1, 1]


def test_waiting_inputs_of_many_canvas_sizes_stay_within_the_budget(monkeypatch):
    """keep_ratio on a dynamic-H/W model gives a canvas per aspect ratio; what waits never exceeds the budget."""
    from nanodet_infer import detector as detector_module
    from nanodet_infer.families.nanodet_plus.decode import num_priors

    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1, keep_ratio=True, **SETTINGS)
    meta = det.metadata.replace(dynamic_batch=True, dynamic_hw=True)
    monkeypatch.setattr(det, "_spec", replace(det._spec, metadata=meta))
    budget = 3 * 4 * 256 * 256 * 2
    monkeypatch.setattr(detector_module, "MAX_BATCH_BYTES", budget)
    sizes = [(256, 256 - 32 * k) for k in range(6)] * 2 + [(256 - 32 * k, 256) for k in range(1, 6)]
    images = [np.zeros((h, w, 3), np.uint8) for w, h in sizes]
    pulled, ran, peaks = [], [], []

    def fake_run(tensor):  # all-zero outputs of the right shape; records the bytes waiting (this batch included)
        peaks.append(sum(image.size * 4 for image in pulled) - sum(12 * w * h for w, h in ran))
        ran.extend([tensor.shape[3:1:-1]] * tensor.shape[0])
        rows = num_priors((tensor.shape[3], tensor.shape[2]), meta.strides)
        return [np.zeros((tensor.shape[0], rows, 3 + 32), np.float32)]

    def lazily():
        for image in images:
            pulled.append(image)
            yield image

    monkeypatch.setattr(det._backend, "run", fake_run)
    results = det.detect_batch(lazily())
    assert [r.image_size for r in results] == sizes and len(ran) == len(sizes)
    assert len({canvas for canvas in ran}) == 11  # one canvas per aspect ratio, none padded to another
    assert budget < max(peaks) <= budget + 3 * 4 * 256 * 256  # the budget plus the image just prepared


def test_a_canvas_above_the_input_limit_is_refused(monkeypatch):
    from nanodet_infer import detector as detector_module
    from nanodet_infer.errors import IncompatibleModelError

    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1)
    monkeypatch.setattr(detector_module, "MAX_INPUT_BYTES", 3 * 4 * 256 * 256 - 1)
    with pytest.raises(IncompatibleModelError, match="a 256x256 network input needs 0.0 GiB"):
        det(IMAGES[0])


def test_pickle_round_trip_keeps_options_and_settings(tmp_path):
    import pickle
    import shutil

    model = shutil.copy(UPSTREAM, tmp_path / "model.onnx")
    det = Detector(model, backend="onnxruntime", num_threads=1, class_names=CLASS_NAMES, **SETTINGS)
    det.max_detections = 5
    again = pickle.loads(pickle.dumps(det))
    assert again.backend_name == "onnxruntime" and again.metadata == det.metadata
    assert again.max_detections == 5 and again.score_threshold == det.score_threshold
    expected, got = det(IMAGES[0]), again(IMAGES[0])
    np.testing.assert_array_equal(got.xyxy, expected.xyxy)
    np.testing.assert_array_equal(got.scores, expected.scores)
    assert got.labels == expected.labels and len(got) == 5
    data = pickle.dumps(det)
    (tmp_path / "model.onnx").unlink()
    from nanodet_infer.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not exist"):
        pickle.loads(data)


def test_detector_runs_in_a_spawn_process_pool():
    """spawn pickles the detector into a fresh interpreter, which loads the model again."""
    import multiprocessing

    det = Detector(UPSTREAM, backend="onnxruntime", num_threads=1, class_names=CLASS_NAMES, **SETTINGS)
    expected = [det(path) for path in IMAGES[:2]]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        results = pool.starmap(Detector.detect, [(det, str(path)) for path in IMAGES[:2]])
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got.xyxy, want.xyxy)
        np.testing.assert_array_equal(got.scores, want.scores)
        assert got.labels == want.labels


def test_timings_are_filled(detector):
    timings = detector(IMAGES[0]).timings
    for value in (timings.preprocess_ms, timings.inference_ms, timings.postprocess_ms):
        assert isinstance(value, float) and value >= 0.0


def test_threads_give_serial_results(detector):
    """8 threads x 24 calls on one Detector: every result equals the serial one bit for bit."""
    serial = {path: detector(path) for path in IMAGES[:8]}
    failures: list[str] = []

    def worker(offset: int) -> None:
        for call in range(24):
            path = IMAGES[(offset + call) % 8]
            got, want = detector(path), serial[path]
            same = (
                np.array_equal(got.xyxy, want.xyxy)
                and np.array_equal(got.scores, want.scores)
                and np.array_equal(got.class_ids, want.class_ids)
            )
            if not same:
                failures.append(f"thread {offset} call {call} {path.name}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


# ---------------------------------------------------------------- the comparison itself must not be vacuous
def _expected(index: int) -> list[Det]:
    return from_json(REFERENCE["images"][index]["detections"])


def test_comparison_flags_a_missing_confident_detection():
    expected = _expected(0)
    result = compare(expected[1:], expected, **SETTINGS)
    assert len(result.unexplained) == 1 and "only upstream" in result.unexplained[0]


def test_comparison_flags_a_wrong_label_or_box():
    expected = _expected(0)
    relabelled = [replace(expected[0], label=(expected[0].label + 1) % 3), *expected[1:]]
    assert len(compare(relabelled, expected, **SETTINGS).unexplained) == 2
    shifted = [replace(expected[0], box=(expected[0].box[0] + 0.02, *expected[0].box[1:])), *expected[1:]]
    assert compare(shifted, expected, **SETTINGS).unexplained


def test_comparison_explains_a_borderline_score_and_iou():
    expected = _expected(0)
    borderline = Det(0, (1.0, 1.0, 9.0, 9.0), 0.050004)
    result = compare(expected, [*expected, borderline], **SETTINGS)
    assert not result.unexplained and "score threshold" in result.explained[0]
    keeper = Det(1, (0.0, 0.0, 10.0, 10.0), 0.9)
    # IoU of [0,0,10,10] and [0,0,10,6] is exactly 0.6: NMS may keep or drop the second box
    touching = Det(1, (0.0, 0.0, 10.0, 6.0), 0.5)
    result = compare([keeper], [keeper, touching], **SETTINGS)
    assert not result.unexplained and "NMS threshold" in result.explained[0]
