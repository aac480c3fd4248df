"""DETR runtime pieces against the official code's stored outputs (tests/data/detr-r18-s, made by the
facebookresearch/detr generator of ../shared/fixtures/detr-r18-s): eval size rule, Pillow resize + normalisation
(sha256 of the input tensor), PostProcess, clipping and selection."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import PIL
import pytest

from nanodet_infer.families.detr.postprocess import post_process, select
from nanodet_infer.families.detr.preprocess import DetrPlan, eval_size, preprocess, resize_u8

DATA = Path(__file__).resolve().parents[2] / "data" / "detr-r18-s"
IMAGES = Path(__file__).resolve().parents[2] / "data" / "shapes-m-256" / "images"
META = json.loads((DATA / "meta.json").read_text())
STEMS = ("val_00000", "val_00002", "val_00004")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZES = {"800": (800, 1333, ""), "512": (512, 853, "_512")}


@pytest.mark.parametrize(
    ("src_wh", "expected_wh"),
    [
        ((482, 245), (1333, 678)),
        ((509, 288), (1332, 754)),
        ((616, 580), (849, 800)),
        ((800, 600), (1066, 800)),
        ((600, 800), (800, 1066)),
        ((1333, 800), (1333, 800)),
        ((800, 800), (800, 800)),
    ],
)
def test_eval_size_follows_get_size_with_aspect_ratio(src_wh, expected_wh):
    assert eval_size(src_wh, 800, 1333) == expected_wh


def test_eval_size_rounds_half_to_even_and_truncates():
    # 1333 * 245 / 482 = 677.55.. -> round 678; 288 x 509: 1333 * 288 / 509 = 754.2 -> 754, long side int(754*509/288)
    assert eval_size((509, 288), 800, 1333) == (int(754 * 509 / 288), 754)
    assert eval_size((100, 50), 800, None) == (1600, 800)


def test_preprocess_is_the_reference_transform_on_the_rgb_image():
    """The reference's order: BGR→RGB, Pillow resize, ToTensor + Normalize; ours resizes the BGR image as it is."""
    from PIL import Image

    rng = np.random.default_rng(3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for src, size in (((61, 43), (90, 64)), ((97, 71), (40, 29))):
        bgr = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
        rgb = np.asarray(Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]), "RGB").resize(size, Image.BILINEAR))
        want = ((rgb.astype(np.float32) / np.float32(255) - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)
        got = preprocess(bgr, DetrPlan(src, size), mean, std)
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()


def test_pillow_resize_matches_stored_reference_bytes():
    """Drift guard: Pillow's bilinear kernel is what the reference used; a new Pillow that moves it fails here."""
    stored = np.load(DATA / "pillow_resize.npz")
    for name, size in (("up", (97, 71)), ("down", (17, 13))):
        got = resize_u8(stored["source"], size)
        diff = int(np.abs(got.astype(int) - stored[name]).max())
        assert np.array_equal(got, stored[name]), (
            f"Pillow {PIL.__version__} bilinear resize ({name}scale) differs from the reference bytes made with "
            f"Pillow 13.0.0 by up to {diff} levels: DETR parity with the official code no longer holds"
        )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stem", STEMS)
def test_preprocess_is_bit_exact(stem, size):
    image = cv2.imread(str(IMAGES / f"{stem}.jpg"))
    h, w = image.shape[:2]
    ref = META["images"][stem][size]
    plan = DetrPlan((w, h), eval_size((w, h), ref["size"], ref["max_size"]))
    assert plan.canvas_size[::-1] == tuple(ref["input_hw"])
    x = preprocess(image, plan, MEAN, STD)
    assert hashlib.sha256(np.ascontiguousarray(x[None]).tobytes()).hexdigest() == ref["input_sha256"]


def _reference(stem: str, size: str) -> dict[str, np.ndarray]:
    return dict(np.load(DATA / f"{stem}{SIZES[size][2]}_outputs.npz"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stem", STEMS)
def test_post_process_equals_official(stem, size):
    ref = _reference(stem, size)
    h, w = META["images"][stem]["orig_size_hw"]
    scores, labels, boxes = post_process(ref["pred_logits"], ref["pred_boxes"], (w, h))
    assert np.array_equal(labels, ref["labels"])
    assert np.array_equal(boxes, ref["boxes"])
    assert np.abs(scores - ref["scores"]).max() <= 5e-7


def test_post_process_on_the_padded_batch_equals_official():
    batch = np.load(DATA / "batch_outputs.npz")
    for b, stem in enumerate(("val_00002", "val_00004")):
        h, w = META["images"][stem]["orig_size_hw"]
        scores, labels, boxes = post_process(batch[f"pred_logits_{b}"], batch[f"pred_boxes_{b}"], (w, h))
        assert np.array_equal(labels, batch[f"labels_{b}"]) and np.array_equal(boxes, batch[f"boxes_{b}"])
        assert np.abs(scores - batch[f"scores_{b}"]).max() <= 5e-7


def test_label_zero_is_a_valid_class_and_no_object_is_dropped():
    logits = np.array([[9.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 20.0]], dtype=np.float32)
    boxes = np.full((2, 4), 0.5, dtype=np.float32)
    scores, labels, _ = post_process(logits, boxes, (10, 10))
    assert labels.tolist() == [0, 0] and scores[0] > 0.99 and scores[1] < 1e-8


def test_select_clips_thresholds_strictly_and_sorts():
    ref = _reference("val_00002", "800")
    h, w = META["images"]["val_00002"]["orig_size_hw"]
    scores, labels, boxes = post_process(ref["pred_logits"], ref["pred_boxes"], (w, h))
    outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
    assert outside.sum() == 2  # the fixture's README: PostProcess does not clip
    xyxy, s, lab = select(scores, labels, boxes, (w, h), 0.7, 100, clip=True)
    assert len(s) == int((scores > 0.7).sum()) == 8 and np.all(np.diff(s) <= 0)
    assert xyxy[:, 0::2].min() >= 0 and xyxy[:, 0::2].max() <= w and xyxy[:, 1::2].max() <= h
    unclipped, _, _ = select(scores, labels, boxes, (w, h), 0.0, 100, clip=False)
    assert len(unclipped) == 100 and np.array_equal(np.sort(unclipped.ravel()), np.sort(boxes.ravel()))
    assert select(scores, labels, boxes, (w, h), float(s[0]), 100, clip=True)[1].size == 0  # strict ">"
    assert len(select(scores, labels, boxes, (w, h), 0.0, 5, clip=True)[1]) == 5
