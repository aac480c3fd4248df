"""torchvision families' runtime maths (SSD/SSDLite, RetinaNet) against torchvision 0.28's own outputs.

The fixtures (``tv-ssdlite320/``, ``tv-retinanet-r50/`` in the shared fixtures, see their READMEs) hold
torchvision's transformed inputs, anchors, raw head outputs and detections for three images, with the
builders' defaults and with a variant setting that exercises top-k, NMS and the cap.

Tolerances: transformed inputs and anchors bit-exact; detections the same in count, order and labels,
boxes within ``BOX_TOL`` px (in the transformed image and in the original one), scores within
``SCORE_TOL``. The only arithmetic that is not torchvision's operation for operation is float32 ``exp``
(in softmax, sigmoid and the box decode): numpy's and torch's differ in the last bits.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from _reference import upstream_nms
from _tiny_models import stored_head
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from nanodet_infer.families import torchvision_common as tv
from nanodet_infer.families.retinanet import anchors as retina_anchors
from nanodet_infer.families.retinanet import postprocess as retina_post
from nanodet_infer.families.retinanet import section as retina_section
from nanodet_infer.families.ssd import default_boxes as ssd_boxes
from nanodet_infer.families.ssd import postprocess as ssd_post
from nanodet_infer.families.ssd import section as ssd_section
from nanodet_infer.families.torchvision_section import torchvision_mean_std
from nanodet_infer.metadata import ModelMetadata

BOX_TOL, SCORE_TOL = 1e-3, 1e-6
IMAGES = ["val_00000", "val_00002", "val_00004"]

SSDLITE = {"size": (320, 320), "mean": (0.5,) * 3, "std": (0.5,) * 3, "nms": 0.55}
SSDLITE_FEATURES = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
RETINA = {"min": 800, "max": 1333, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "nms": 0.5}
RETINA_STRIDES = [8, 16, 32, 64, 128]
SSD_CODER, RETINA_CODER = (10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)


def _image(name: str) -> np.ndarray:
    return cv2.imread(str(SHAPES / "images" / f"{name}.jpg"))


def _src_size(image: np.ndarray) -> tuple[int, int]:
    return image.shape[1], image.shape[0]


def _settings(record: dict, builder: dict) -> list[tuple[dict, dict]]:
    """(postprocess keyword arguments, torchvision's result) for the builder's defaults and the variant."""
    return [(_keywords(builder), record), (_keywords(record["variant"]["params"]), record["variant"])]


def _keywords(params: dict) -> dict:
    """torchvision's postprocess attribute names → ours."""
    return {
        "score_threshold": params["score_thresh"],
        "topk_candidates": params["topk_candidates"],
        "max_detections": params["detections_per_img"],
    }


def _params(coder_weights: tuple[float, ...], topk_candidates: int = 10, **settings) -> tv.DetectionParams:
    return tv.DetectionParams(coder_weights=coder_weights, topk_candidates=topk_candidates, **settings)


def _assert_same(boxes, scores, labels, plan: tv.ResizePlan, expected: dict) -> None:
    """Same detections, order and labels as torchvision, before and after the rescale to the original image."""
    want = expected["detections"]
    assert labels.tolist() == want["labels"]
    np.testing.assert_allclose(scores, want["scores"], rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(boxes, expected["detections_transformed"]["boxes"], rtol=0, atol=BOX_TOL)
    np.testing.assert_allclose(tv.boxes_to_original(boxes, plan), want["boxes"], rtol=0, atol=BOX_TOL)


# ---------------------------------------------------------------------------------------------- SSDLite


@pytest.fixture(scope="module")
def ssdlite(shared_fixtures):
    root = shared_fixtures / "tv-ssdlite320"
    return root, json.loads((root / "meta.json").read_text())


def _ssdlite_boxes() -> np.ndarray:
    scales = ssd_boxes.default_box_scales(6, 0.2, 0.95)
    return ssd_boxes.default_boxes(SSDLITE_FEATURES, SSDLITE["size"], [[2, 3]] * 6, scales)


@pytest.mark.shared
@pytest.mark.parametrize("compiled", [True, False], ids=["C kernel", "numpy"])
@pytest.mark.parametrize("name", IMAGES)
def test_ssdlite_transform_is_bit_exact(ssdlite, name, compiled):
    root, _ = ssdlite
    image = _image(name)
    plan = tv.fixed_size_plan(_src_size(image), SSDLITE["size"])
    got = tv.transform(image, plan, SSDLITE["mean"], SSDLITE["std"], compiled=compiled)
    np.testing.assert_array_equal(got, np.load(root / name / "input.npy")[0])


@pytest.mark.shared
def test_ssdlite_default_boxes_are_bit_exact(ssdlite):
    root, meta = ssdlite
    assert list(ssd_boxes.default_box_scales(6, 0.2, 0.95)) == meta["anchor_generator"]["scales"]
    np.testing.assert_array_equal(_ssdlite_boxes(), np.load(root / "val_00000" / "anchors.npy"))


@pytest.mark.shared
@pytest.mark.parametrize("name", IMAGES)
def test_ssdlite_postprocess_matches_torchvision(ssdlite, name):
    root, meta = ssdlite
    record = json.loads((root / name / "detections.json").read_text())
    logits = np.load(root / name / "cls_logits.npy")[0]
    deltas = np.load(root / name / "bbox_regression.npy")[0]
    plan = tv.fixed_size_plan(record["orig_size_hw"][::-1], SSDLITE["size"])
    for settings, expected in _settings(record, meta["postprocess"]):
        params = _params(SSD_CODER, image_size=plan.resized_size, iou_threshold=SSDLITE["nms"], **settings)
        boxes, scores, labels = ssd_post.postprocess(logits, deltas, _ssdlite_boxes(), params)
        _assert_same(boxes, scores, labels, plan, expected)


@pytest.mark.shared
def test_ssdlite_single_label_keeps_each_anchors_best_label(ssdlite):
    root, _ = ssdlite
    logits = np.load(root / "val_00000" / "cls_logits.npy")[0]
    deltas = np.load(root / "val_00000" / "bbox_regression.npy")[0]
    settings = {"score_threshold": 1e-4, "iou_threshold": 0.55, "max_detections": 1000, "topk_candidates": 20}
    settings["image_size"] = (320, 320)
    multi = ssd_post.postprocess(logits, deltas, _ssdlite_boxes(), _params(SSD_CODER, **settings))
    single = _params(SSD_CODER, multi_label=False, **settings)
    boxes, _, labels = ssd_post.postprocess(logits, deltas, _ssdlite_boxes(), single)
    assert len(labels) and labels.tolist() != multi[2].tolist()
    decoded = tv.clip_boxes(tv.decode_boxes(deltas, _ssdlite_boxes(), SSD_CODER), (320, 320))
    for box, label in zip(boxes, labels, strict=True):
        anchor = np.flatnonzero((decoded == box).all(axis=1))[0]
        assert label == 1 + logits[anchor, 1:].argmax()


def test_ssd300_default_boxes_follow_torchvisions_steps():
    """SSD300-VGG16 has no shared fixture: the builder's parameters, checked against hand-derived boxes."""
    boxes = ssd_boxes.default_boxes(
        [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)],
        (300, 300),
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    assert boxes.shape == (8732, 4)
    # first box: centre 0.5 / (300 / 8), scale 0.07 → (c -/+ 0.035) * 300
    np.testing.assert_allclose(boxes[0], [-6.5, -6.5, 14.5, 14.5], atol=1e-5)
    # last level, ar 2: w = 0.87 * sqrt(2) clipped to 1, h = 0.87 / sqrt(2); centred at 150
    h = 0.87 / math.sqrt(2) * 300
    np.testing.assert_allclose(boxes[-2], [0, 150 - h / 2, 300, 150 + h / 2], atol=1e-4)
    # level 1 (steps 16: 300 / 16 = 18.75 centres per image), location (0, 1), box s'_k
    s_prime = math.sqrt(0.15 * 0.33) * 300
    cx, cy = 1.5 / 18.75 * 300, 0.5 / 18.75 * 300
    row = 38 * 38 * 4 + 1 * 6 + 1
    np.testing.assert_allclose(
        boxes[row], [cx - s_prime / 2, cy - s_prime / 2, cx + s_prime / 2, cy + s_prime / 2], atol=1e-4
    )


# -------------------------------------------------------------------------------------------- RetinaNet


@pytest.fixture(scope="module")
def retinanet(shared_fixtures):
    root = shared_fixtures / "tv-retinanet-r50"
    return root, json.loads((root / "meta.json").read_text())


def _retina_anchors(meta: dict, canvas: tuple[int, int]) -> tuple[np.ndarray, tuple[int, ...]]:
    generator = meta["anchor_generator"]
    return retina_anchors.anchors(canvas, RETINA_STRIDES, generator["sizes"], generator["aspect_ratios"])


def _dense_head(sparse) -> tuple[np.ndarray, np.ndarray]:
    """The fixture README's rebuild: logits -100 except the stored ones, deltas 0 except the stored rows."""
    num_anchors, num_classes = int(sparse["num_anchors"]), int(sparse["num_classes"])
    logits = np.full((num_anchors, num_classes), -100, np.float32)
    logits.reshape(-1)[sparse["cls_index"]] = sparse["cls_logit"]
    deltas = np.zeros((num_anchors, 4), np.float32)
    deltas[sparse["anchor_index"]] = sparse["bbox_regression"]
    return logits, deltas


@pytest.mark.shared
@pytest.mark.parametrize("compiled", [True, False], ids=["C kernel", "numpy"])
@pytest.mark.parametrize("name", IMAGES)
def test_retinanet_transform_is_bit_exact(retinanet, name, compiled):
    root, _ = retinanet
    record = json.loads((root / name / "detections.json").read_text())
    sample = np.load(root / name / "input_sample.npz")
    image = _image(name)
    plan = tv.min_max_size_plan(_src_size(image), RETINA["min"], RETINA["max"], 32)
    assert plan.resized_size == tuple(record["image_size_hw"][::-1])
    got = tv.transform(image, plan, RETINA["mean"], RETINA["std"], compiled=compiled)
    assert got.shape == tuple(sample["input_shape"][1:])
    np.testing.assert_array_equal(got[:, sample["rows"]][:, :, sample["cols"]], sample["values"])


@pytest.mark.shared
def test_retinanet_anchors_are_bit_exact(retinanet):
    root, meta = retinanet
    generator = meta["anchor_generator"]
    for sizes, ratios, cell in zip(
        generator["sizes"], generator["aspect_ratios"], generator["cell_anchors"], strict=True
    ):
        np.testing.assert_array_equal(retina_anchors.cell_anchors(sizes, ratios), np.float32(cell))
    # a 96x64 input: P6's stride is (48, 64), P7's (96, 64)
    anchors, per_level = _retina_anchors(meta, (96, 64))
    np.testing.assert_array_equal(anchors, np.load(root / "raw_seed0" / "anchors.npy"))
    assert per_level == (864, 216, 54, 18, 9)
    for name in IMAGES:
        record = json.loads((root / name / "detections.json").read_text())
        sparse = np.load(root / name / "head_sparse.npz")
        anchors, per_level = _retina_anchors(meta, tuple(record["input_shape"][:1:-1]))
        assert list(per_level) == record["anchors_per_level"]
        np.testing.assert_array_equal(anchors[sparse["anchor_index"]], sparse["anchors"])


@pytest.mark.shared
@pytest.mark.parametrize("name", IMAGES)
def test_retinanet_postprocess_matches_torchvision(retinanet, name):
    root, meta = retinanet
    record = json.loads((root / name / "detections.json").read_text())
    logits, deltas = _dense_head(np.load(root / name / "head_sparse.npz"))
    plan = tv.min_max_size_plan(record["orig_size_hw"][::-1], RETINA["min"], RETINA["max"], 32)
    anchors, per_level = _retina_anchors(meta, plan.canvas_size)
    for settings, expected in _settings(record, meta["postprocess"]):
        params = _params(RETINA_CODER, image_size=plan.resized_size, iou_threshold=RETINA["nms"], **settings)
        boxes, scores, labels = retina_post.postprocess(logits, deltas, anchors, per_level, params)
        _assert_same(boxes, scores, labels, plan, expected)


# ---------------------------------------------------------------------------------- shared arithmetic


def test_min_max_size_rule():
    """float64 scale, truncated sizes (the short side may end below min_size), padding to /32."""
    plan = tv.min_max_size_plan((482, 245), 800, 1333, 32)
    assert (plan.resized_size, plan.canvas_size) == ((1333, 677), (1344, 704))
    assert tv.min_max_size_plan((616, 580), 800, 1333, 32).resized_size == (849, 800)
    assert tv.min_max_size_plan((800, 600), 800, 1333, 32).resized_size == (1066, 800)
    # far outside the trained range: the rule still applies, and no side becomes 0
    assert tv.min_max_size_plan((20000, 3), 800, 1333, 32).resized_size == (1333, 1)
    assert tv.min_max_size_plan((5, 5), 800, 1333, 32).canvas_size == (800, 800)
    with pytest.raises(InvalidArgumentError):
        tv.min_max_size_plan((0, 5), 800, 1333, 32)
    # a static canvas: torchvision's plan where it fits, else the scale is limited so that it fits
    assert tv.min_max_size_plan((482, 245), 800, 1333, 32, canvas=(1344, 704)) == plan
    portrait = tv.min_max_size_plan((245, 482), 800, 1333, 32, canvas=(1344, 704))
    assert portrait.canvas_size == (1344, 704) and portrait.resized_size == (357, 704)


def test_bilinear_resize_agrees_with_cv2_and_keeps_identity():
    """cv2's float bilinear is the same interpolation up to its own rounding (fixture READMEs: <= 3e-5)."""
    rng = np.random.default_rng(0)
    planes = rng.random((3, 37, 53), dtype=np.float32)
    for size in [(53, 37), (100, 80), (20, 11), (53, 90)]:
        got = tv.bilinear_resize(planes, size)
        want = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_LINEAR) for p in planes])
        np.testing.assert_allclose(got, want, rtol=0, atol=3e-5)
    np.testing.assert_array_equal(tv.bilinear_resize(planes, (53, 37)), planes)


def test_preprocess_kernel_is_built():
    # Not a skip: an install that silently lost its kernel would preprocess 5-8x slower with every other test green.
    assert tv._preprocess_kernel is not None, "nanodet_infer._preprocess_kernel is not built: run pip install -e ."


def test_compiled_transform_is_the_numpy_transform_bit_for_bit():
    """Random sizes, both plan kinds, up- and down-scaling, 1-pixel sides, a padded canvas, a batch slot."""
    rng = np.random.default_rng(7)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for case in range(120):
        h, w = (int(v) for v in rng.integers(1, 260, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if case % 2:
            plan = tv.fixed_size_plan((w, h), tuple(int(v) for v in rng.integers(1, 330, 2)))
        else:
            plan = tv.min_max_size_plan((w, h), int(rng.integers(1, 400)), int(rng.integers(1, 700)), 32)
        want = tv.transform(image, plan, mean, std, compiled=False)
        got = tv.transform(image, plan, mean, std, compiled=True)
        assert got.tobytes() == want.tobytes(), (case, plan)
    batch = np.full((2, 3, *plan.canvas_size[::-1]), np.nan, np.float32)  # a slot of a batch, stale values
    tv.transform(image, plan, mean, std, out=batch[1], compiled=True)
    assert batch[1].tobytes() == want.tobytes() and np.isnan(batch[0]).all()
    strided = np.full((3, plan.canvas_size[1], plan.canvas_size[0] * 2), np.nan, np.float32)[:, :, ::2]
    tv.transform(image, plan, mean, std, out=strided, compiled=True)  # not contiguous: the numpy path
    assert strided.tobytes() == want.tobytes()


def test_compiled_lookup_is_cv2_lut_per_plane():
    image = np.random.default_rng(1).integers(0, 256, (31, 47, 3), dtype=np.uint8)
    tables = tv.normalisation_tables((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    want = tv.normalise_planes(image, tables, compiled=False)
    assert tv.normalise_planes(image, tables, compiled=True).tobytes() == want.tobytes()
    assert want[0].tobytes() == tables[0][image[..., 2], 0].tobytes()  # plane 0 is red: BGR channel 2


def test_transform_pads_with_zeros_after_normalising():
    image = np.full((10, 20, 3), 255, np.uint8)
    plan = tv.ResizePlan((20, 10), (20, 10), (32, 32))
    out = tv.transform(image, plan, (0.5,) * 3, (0.5,) * 3)
    assert out.shape == (3, 32, 32)
    assert (out[:, :10, :20] == 1).all() and (out[:, 10:] == 0).all() and (out[:, :, 20:] == 0).all()


def _random_boxes(rng, n: int, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = rng.random((n, 2), dtype=np.float32) * 300
    wh = rng.random((n, 2), dtype=np.float32) * 60 + 1
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.random(n, dtype=np.float32)
    return boxes, scores, rng.integers(0, classes, n)


@pytest.mark.parametrize("n", [400, 1000, 1001, 3000])
def test_batched_nms_takes_torchvisions_path(n):
    """<= 1000 boxes: one NMS on shifted boxes; above: NMS per class on unshifted boxes, then a score sort."""
    rng = np.random.default_rng(n)
    boxes, scores, labels = _random_boxes(rng, n, 7)
    got = tv.torchvision_batched_nms(boxes, scores, labels, 0.5, None)
    if n <= 1000:
        want = upstream_nms(boxes, scores, labels, 0.5)
    else:
        per_class = []
        for c in range(7):
            rows = np.flatnonzero(labels == c)
            per_class.append(rows[upstream_nms(boxes[rows], scores[rows], np.zeros(len(rows), np.int64), 0.5)])
        kept = np.sort(np.concatenate(per_class))
        want = kept[np.argsort(-scores[kept], kind="stable")]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(tv.torchvision_batched_nms(boxes, scores, labels, 0.5, 50), want[:50])


@pytest.mark.parametrize(("n", "pair_kept"), [(1000, 2), (1001, 1)])
def test_batched_nms_paths_decide_like_torchvision(n, pair_kept):
    """The coordinate trick rounds shifted coordinates (label 90 x 1334 = 120060: float32 steps of 1/128), so a
    pair with IoU 0.99900 unshifted has IoU 0.99844 shifted: at 0.9985 only the per-class path (> 1000 boxes)
    suppresses it."""
    boxes = np.zeros((n, 4), np.float32)
    boxes[0], boxes[1], boxes[2] = [0, 0, 10, 10], [0.005, 0, 10.005, 10], [1323, 1323, 1333, 1333]
    labels = np.ones(n, np.int64)  # fillers: class 1, disjoint unit boxes along the diagonal
    labels[:2], labels[2] = 90, 0
    diagonal = 20 + np.arange(n - 3, dtype=np.float32)
    boxes[3:] = np.stack([diagonal, diagonal, diagonal + 0.5, diagonal + 0.5], axis=1) % 1300
    scores = np.linspace(1, 0.1, n, dtype=np.float32)
    keep = tv.torchvision_batched_nms(boxes, scores, labels, 0.9985, None)
    assert np.isin([0, 1], keep).sum() == pair_kept


def test_decode_boxes_matches_the_coder_formula():
    rng = np.random.default_rng(1)
    anchors = _random_boxes(rng, 64, 1)[0]
    deltas = rng.normal(size=(64, 4)).astype(np.float32) * 3
    deltas[0, 2:] = 50  # beyond the clamp
    got = tv.decode_boxes(deltas, anchors, (10, 10, 5, 5))
    a, d = anchors.astype(np.float64), deltas.astype(np.float64) / [10, 10, 5, 5]
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    cx, cy = a[:, 0] + w / 2, a[:, 1] + h / 2
    pw, ph = np.exp(np.minimum(d[:, 2], tv.BBOX_XFORM_CLIP)) * w, np.exp(np.minimum(d[:, 3], tv.BBOX_XFORM_CLIP)) * h
    pcx, pcy = d[:, 0] * w + cx, d[:, 1] * h + cy
    want = np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(tv.decode_boxes(deltas[5:9], anchors[5:9], (10, 10, 5, 5)), got[5:9])


@pytest.mark.parametrize("threshold", [0.0, 1e-4, 0.05, 0.5, 0.999, 0.999999])
def test_retinanet_logit_prefilter_changes_nothing(threshold):
    """Candidates found through the logit bound equal those of a sigmoid on every entry."""
    rng = np.random.default_rng(2)
    centre = 0.0 if threshold == 0 else math.log(threshold / (1 - threshold))
    logits = (centre + rng.normal(size=(500, 91)) * 1e-3).astype(np.float32)
    logits[::7] += np.float32(rng.normal(size=(1, 91)) * 5)
    index, scores = retina_post._level_candidates(logits, threshold, 10**9)
    every = np.float32(1) / (np.float32(1) + np.exp(-logits.reshape(-1)))
    want = np.flatnonzero(every > np.float32(threshold))
    want = want[np.argsort(-every[want], kind="stable")]
    np.testing.assert_array_equal(index, want)
    np.testing.assert_array_equal(scores, every[want])


def test_retinanet_single_label_equals_masking_the_other_classes():
    rng = np.random.default_rng(3)
    anchors, per_level = retina_anchors.anchors((128, 96), RETINA_STRIDES, [[32, 40]] * 5, [[0.5, 1.0]] * 5)
    logits = rng.normal(-3, 1.5, size=(len(anchors), 5)).astype(np.float32)
    logits[7, 2] = np.nan  # the anchor's best finite class still counts
    deltas = rng.normal(0, 0.3, size=(len(anchors), 4)).astype(np.float32)
    settings = {"score_threshold": 0.05, "iou_threshold": 0.5, "max_detections": 1000, "topk_candidates": 40}
    settings["image_size"] = (128, 96)
    masked = np.full_like(logits, -100)
    finite = np.where(np.isnan(logits), -np.inf, logits)
    rows = np.arange(len(logits))
    masked[rows, finite.argmax(axis=1)] = finite[rows, finite.argmax(axis=1)]
    got = retina_post.postprocess(
        logits, deltas, anchors, per_level, _params(RETINA_CODER, multi_label=False, **settings)
    )
    want = retina_post.postprocess(masked, deltas, anchors, per_level, _params(RETINA_CODER, **settings))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    every = retina_post.postprocess(logits, deltas, anchors, per_level, _params(RETINA_CODER, **settings))
    assert len(got[2]) < len(every[2])


def test_postprocess_rejects_mismatched_outputs():
    boxes = _ssdlite_boxes()
    params = _params(SSD_CODER, image_size=(64, 64), score_threshold=0.05, iou_threshold=0.5, max_detections=10)
    with pytest.raises(InvalidArgumentError, match="default boxes"):
        ssd_post.postprocess(np.zeros((10, 91), np.float32), np.zeros((10, 4), np.float32), boxes, params)
    anchors, per_level = retina_anchors.anchors((64, 64), RETINA_STRIDES, [[32]] * 5, [[1.0]] * 5)
    with pytest.raises(InvalidArgumentError, match="anchors"):
        rows = len(anchors) + 1
        retina_post.postprocess(
            np.zeros((rows, 3), np.float32), np.zeros((rows, 4), np.float32), anchors, per_level, params
        )
    with pytest.raises(InvalidArgumentError, match="topk_candidates"):
        _params(
            SSD_CODER,
            image_size=(64, 64),
            score_threshold=0.05,
            iou_threshold=0.5,
            max_detections=10,
            topk_candidates=0,
        )


# ------------------------------------------------------------------------- metadata and the Detector


def _properties(family: str, categories: list[str], **keys) -> dict[str, str]:
    return ModelMetadata(
        num_classes=len(categories), class_names=tuple(categories), model_family=family, **keys
    ).to_properties()


def test_builder_mean_std_round_trip_to_torchvisions_values():
    """The common keys hold torchvision's mean/std times 255; dividing again gives torchvision's floats exactly."""
    torchvision = {
        "ssd300_vgg16": ((0.48235, 0.45882, 0.40784), (1.0 / 255.0,) * 3),
        "ssdlite320_mobilenet_v3_large": ((0.5,) * 3, (0.5,) * 3),
    }
    for name, keys in ssd_section.BUILDERS.items():
        assert torchvision_mean_std(keys["mean"], keys["std"]) == torchvision[name]
    imagenet = retina_section.RetinaNetSection.COMMON_DEFAULTS
    assert torchvision_mean_std(imagenet["mean"], imagenet["std"]) == (RETINA["mean"], RETINA["std"])
    assert ssd_section.BUILDERS["ssdlite320_mobilenet_v3_large"]["default_box_scales"] == (
        ssd_boxes.default_box_scales(6, 0.2, 0.95)
    )


@pytest.mark.parametrize("builder", sorted(ssd_section.BUILDERS))
def test_ssd_metadata_round_trips(builder):
    props = _properties("ssd", ["__background__", "a", "b"], **ssd_section.BUILDERS[builder])
    meta = ModelMetadata.from_properties(props)
    assert ModelMetadata.from_properties(meta.to_properties()) == meta
    assert meta.to_properties()["nanodet.model_family"] == "ssd"
    assert meta.num_default_boxes == {"ssd300_vgg16": 8732, "ssdlite320_mobilenet_v3_large": 3234}[builder]
    sizes = [v for size in meta.feature_map_sizes for v in size]  # read back as ints (an int-lists key)
    assert sizes and all(type(v) is int for v in sizes)
    written = props["nanodet.feature_map_sizes"]
    with pytest.raises(MetadataError, match="feature_map_sizes.*int lists"):
        ModelMetadata.from_properties({**props, "nanodet.feature_map_sizes": written.replace(",", ".0,", 1)})


def test_retinanet_metadata_defaults_are_torchvisions():
    meta = ModelMetadata.from_properties(_properties("retinanet", ["a", "b"], input_size=(1344, 800)))
    assert meta.anchor_sizes == ((32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406), (512, 645, 812))
    assert (meta.min_size, meta.max_size, meta.size_divisible, meta.topk_candidates) == (800, 1333, 32, 1000)
    assert ModelMetadata.from_properties(meta.to_properties()) == meta


@pytest.mark.parametrize(
    ("family", "keys", "message"),
    [
        ("ssd", {"default_box_scales": (0.2, 0.5)}, "default_box_scales"),
        ("ssd", {"default_box_steps": (8, 16)}, "default_box_steps"),
        ("ssd", {"feature_map_sizes": ((20.5, 20),) * 6}, "feature_map_sizes"),
        ("ssd", {"default_box_aspect_ratios": ((2, -3),) * 6}, "default_box_aspect_ratios"),
        ("ssd", {"background_class": 1}, "background_class"),
        ("ssd", {"bbox_xform_clip": 200.0}, "bbox_xform_clip"),
        ("retinanet", {"anchor_sizes": ((32,),) * 4}, "anchor_sizes"),
        ("retinanet", {"anchor_sizes": ((0,),) * 5}, "anchor_sizes"),
        ("retinanet", {"strides": (8, 8, 16, 32, 64)}, "strides"),
        ("retinanet", {"box_coder_weights": (1, 1, 1)}, "box_coder_weights"),
        ("retinanet", {"topk_candidates": 0}, "topk_candidates"),
    ],
)
def test_impossible_anchor_configurations_are_metadata_errors(family, keys, message):
    base = dict(ssd_section.BUILDERS["ssdlite320_mobilenet_v3_large"]) if family == "ssd" else {"input_size": (64, 64)}
    with pytest.raises(MetadataError, match=message):
        _properties(family, ["a", "b"], **{**base, **keys})


def _ssdlite_model(tmp_path, root, name: str, **keys) -> str:
    meta = json.loads((root / "meta.json").read_text())
    logits = np.load(root / name / "cls_logits.npy")
    deltas = np.load(root / name / "bbox_regression.npy")
    every = np.arange(logits.size)
    properties = _properties(
        "ssd", meta["categories"], **{**ssd_section.BUILDERS["ssdlite320_mobilenet_v3_large"], **keys}
    )
    outputs = {
        "cls_logits": (logits.shape, 0.0, every, logits.ravel()),
        "bbox_regression": (deltas.shape, 0.0, np.arange(deltas.size), deltas.ravel()),
    }
    return str(stored_head(tmp_path / f"{name}.onnx", size=(320, 320), outputs=outputs, metadata=properties))


def _check_detections(result, expected: dict) -> None:
    want = expected["detections"]
    assert result.class_ids.tolist() == want["labels"]
    np.testing.assert_allclose(result.scores, want["scores"], rtol=0, atol=SCORE_TOL)
    np.testing.assert_allclose(result.xyxy, want["boxes"], rtol=0, atol=BOX_TOL)


@pytest.mark.shared
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_detector_runs_ssdlite_like_torchvision(ssdlite, tmp_path, backend):
    """Image in, detections out, through the registry: a model returning torchvision's stored head outputs."""
    root, _ = ssdlite
    record = json.loads((root / "val_00000" / "detections.json").read_text())
    detector = Detector(_ssdlite_model(tmp_path, root, "val_00000"), backend=backend)
    assert (detector.score_threshold, detector.iou_threshold, detector.max_detections) == (0.001, 0.55, 300)
    result = detector(SHAPES / "images" / "val_00000.jpg")
    _check_detections(result, record)
    assert result.class_names[result.class_ids[0]] == json.loads((root / "meta.json").read_text())["categories"][1]
    variant = record["variant"]["params"]
    detector = Detector(
        _ssdlite_model(tmp_path, root, "val_00000", topk_candidates=variant["topk_candidates"]),
        backend=backend,
        score_threshold=variant["score_thresh"],
        max_detections=variant["detections_per_img"],
    )
    _check_detections(detector(SHAPES / "images" / "val_00000.jpg"), record["variant"])
    with pytest.raises(InvalidArgumentError, match="keep_ratio"):
        Detector(_ssdlite_model(tmp_path, root, "val_00000"), backend=backend, keep_ratio=True)(
            SHAPES / "images" / "val_00000.jpg"
        )


@pytest.mark.shared
@pytest.mark.parametrize(("backend", "dynamic_hw"), [("onnxruntime", True), ("openvino", True), ("onnxruntime", False)])
def test_detector_runs_retinanet_like_torchvision(retinanet, tmp_path, backend, dynamic_hw):
    """Dynamic H/W pads to /32 as torchvision does; a static 1344x704 input is the same canvas for this image."""
    root, meta = retinanet
    record = json.loads((root / "val_00000" / "detections.json").read_text())
    sparse = np.load(root / "val_00000" / "head_sparse.npz")
    rows = int(sparse["num_anchors"])
    box_index = (sparse["anchor_index"][:, None] * 4 + np.arange(4)).ravel()
    outputs = {
        "cls_logits": ((1, rows, 91), -100.0, sparse["cls_index"], sparse["cls_logit"]),
        "bbox_regression": ((1, rows, 4), 0.0, box_index, sparse["bbox_regression"].ravel()),
    }
    properties = _properties("retinanet", meta["categories"], input_size=(1344, 704), dynamic_hw=dynamic_hw)
    path = stored_head(
        tmp_path / "r.onnx", size=(1344, 704), dynamic_hw=dynamic_hw, outputs=outputs, metadata=properties
    )
    detector = Detector(str(path), backend=backend)
    _check_detections(detector(SHAPES / "images" / "val_00000.jpg"), record)
    variant = record["variant"]["params"]
    detector.score_threshold, detector.max_detections = variant["score_thresh"], variant["detections_per_img"]
    properties = _properties(
        "retinanet",
        meta["categories"],
        input_size=(1344, 704),
        dynamic_hw=dynamic_hw,
        topk_candidates=variant["topk_candidates"],
    )
    path = stored_head(
        tmp_path / "v.onnx", size=(1344, 704), dynamic_hw=dynamic_hw, outputs=outputs, metadata=properties
    )
    detector = Detector(
        str(path),
        backend=backend,
        score_threshold=variant["score_thresh"],
        max_detections=variant["detections_per_img"],
    )
    _check_detections(detector(SHAPES / "images" / "val_00000.jpg"), record["variant"])


def test_detector_refuses_a_head_that_does_not_match_its_anchors(tmp_path):
    keys = ssd_section.BUILDERS["ssdlite320_mobilenet_v3_large"]
    outputs = {
        "cls_logits": ((1, 3000, 3), 0.0, np.zeros(1, np.int64), np.zeros(1, np.float32)),
        "bbox_regression": ((1, 3000, 4), 0.0, np.zeros(1, np.int64), np.zeros(1, np.float32)),
    }
    path = stored_head(
        tmp_path / "m.onnx", size=(320, 320), outputs=outputs, metadata=_properties("ssd", ["bg", "a", "b"], **keys)
    )
    with pytest.raises(IncompatibleModelError, match="3234"):
        Detector(str(path), backend="onnxruntime")
    plain = stored_head(tmp_path / "plain.onnx", size=(320, 320), outputs=outputs)
    with pytest.raises(MetadataError, match="nanodet-export"):
        Detector(str(plain), backend="onnxruntime", model_family="ssd")
