"""DETR end to end against the official code's outputs (../shared/fixtures/detr-r18-s): the torch model, the
exported ONNX / OpenVINO IR files at 800 and 512, and batches. Tolerances are the measured maxima, rounded up
(docs/families/detr.md gives the figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from test_detr_runtime import DATA, IMAGES, META, SIZES, STEMS, _reference

from nanodet_infer import Detector

pytestmark = [pytest.mark.shared, pytest.mark.slow]
ENGINES = ("onnxruntime", "openvino")
LOGITS_TOL, BOXES_TOL = 5e-4, 2e-5  # raw outputs vs the reference (torch at 2 threads)
BOX_PX_TOL, SCORE_TOL = 0.1, 5e-4  # end to end from the image file (the bounds)


@pytest.fixture(scope="module")
def checkpoint(shared_fixtures: Path):
    from nanodet_models.detr import read_detr_checkpoint

    return read_detr_checkpoint(shared_fixtures / "detr-r18-s" / "model.pth")


@pytest.fixture(scope="module")
def reports(shared_fixtures: Path, tmp_path_factory) -> dict[tuple[str, str], Any]:
    """``(engine, size) -> ExportReport`` of the fixture's hub-layout ``model.pth``: ONNX at 800 with the export's
    parity check; the others traced unchecked (each is checked against the official outputs below, which is
    stricter)."""
    from nanodet_export.api import export_checkpoint

    out = tmp_path_factory.mktemp("detr")
    ckpt = shared_fixtures / "detr-r18-s" / "model.pth"
    done = {}
    for size, (min_size, max_size, _) in SIZES.items():
        for engine, suffix, fmt in (("onnxruntime", "onnx", "onnx"), ("openvino", "xml", "openvino")):
            done[engine, size] = export_checkpoint(
                ckpt,
                out / f"detr_{size}.{suffix}",
                fmt=fmt,
                check=(engine, size) == ("onnxruntime", "800"),
                min_size=min_size,
                max_size=max_size,
            )
    return done


@pytest.fixture(scope="module")
def exported(reports) -> dict[tuple[str, str], Path]:
    """``(engine, size) -> file`` of :func:`reports`."""
    return {key: report.paths[0] for key, report in reports.items()}


def test_summary_warns_of_what_a_hub_checkpoint_does_not_store(reports):
    from nanodet_export.cli import summary

    report = reports["onnxruntime", "800"]
    assert report.metadata.architecture["assumed"] == ["dilation=False (DETR's default)", "nheads=8 (DETR's default)"]
    warning = next(line for line in summary(report).splitlines() if line.lstrip().startswith("warning"))
    assert "assumed (not stored in the checkpoint): dilation=False (DETR's default), nheads=8" in warning
    assert "export main.py's checkpoint.pth" in warning and "--bn-eps" not in warning


def _image(stem: str) -> np.ndarray:
    return cv2.imread(str(IMAGES / f"{stem}.jpg"))


def _x(stem: str, detector: Detector) -> np.ndarray:
    return detector.network_input(_image(stem))[None]


def test_torch_model_reproduces_the_official_outputs(checkpoint):
    from nanodet_infer.families.detr.preprocess import DetrPlan, eval_size, preprocess

    model = checkpoint.build()
    for stem in STEMS:
        image = _image(stem)
        h, w = image.shape[:2]
        x = preprocess(
            image, DetrPlan((w, h), eval_size((w, h), 800, 1333)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        )
        ref = _reference(stem, "800")
        with torch.no_grad():
            layers = model.all_layers(torch.from_numpy(x)[None], torch.zeros(1, *x.shape[1:], dtype=torch.bool))
        (aux_logits, aux_boxes), (logits, boxes) = layers
        assert np.abs(logits[0].numpy() - ref["pred_logits"]).max() <= 1e-4
        assert np.abs(boxes[0].numpy() - ref["pred_boxes"]).max() <= 5e-6
        assert np.abs(aux_logits[0].numpy() - ref["aux0_pred_logits"]).max() <= 1e-4


def test_torch_model_with_the_mask_reproduces_the_padded_batch(checkpoint):
    from nanodet_infer.families.detr.preprocess import DetrPlan, eval_size, preprocess

    batch = np.load(DATA / "batch_outputs.npz")
    mask = torch.from_numpy(batch["mask"])
    x = torch.zeros(2, 3, *mask.shape[1:])
    for b, stem in enumerate(("val_00002", "val_00004")):
        image = _image(stem)
        h, w = image.shape[:2]
        t = preprocess(
            image, DetrPlan((w, h), eval_size((w, h), 800, 1333)), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        )
        x[b, :, : t.shape[1], : t.shape[2]] = torch.from_numpy(t)
        assert not mask[b, : t.shape[1], : t.shape[2]].any() and mask[b].sum() == mask[b].numel() - t[0].size
    with torch.no_grad():
        logits, boxes = checkpoint.build()(x, mask)
    for b in range(2):
        assert np.abs(logits[b].numpy() - batch[f"pred_logits_{b}"]).max() <= 1e-4
        assert np.abs(boxes[b].numpy() - batch[f"pred_boxes_{b}"]).max() <= 5e-6


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("engine", ENGINES)
def test_raw_outputs_within_measured_tolerance(exported, engine, size):
    detector = Detector(exported[engine, size], backend=engine, num_threads=1)
    backend = detector._backend
    for stem in STEMS:
        x = _x(stem, detector)
        assert tuple(x.shape[2:]) == tuple(META["images"][stem][size]["input_hw"])
        logits, boxes = backend.run(x)
        ref = _reference(stem, size)
        assert np.abs(logits[0] - ref["pred_logits"]).max() <= LOGITS_TOL
        assert np.abs(boxes[0] - ref["pred_boxes"]).max() <= BOXES_TOL


def _matched(detections, ref, size_wh):
    """Each detection's reference query: same label, nearest box (clipped like the runtime)."""
    ref_boxes = ref["boxes"].copy()
    ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clip(0, size_wh[0])
    ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clip(0, size_wh[1])
    rows = []
    for box, score, label in zip(detections.xyxy, detections.scores, detections.class_ids, strict=True):
        distance = np.abs(ref_boxes - box).max(axis=1) + np.abs(ref["scores"] - score) * 1e3
        query = int(distance.argmin())
        rows.append(
            (
                query,
                label == ref["labels"][query],
                np.abs(ref_boxes[query] - box).max(),
                abs(ref["scores"][query] - score),
            )
        )
    return rows


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("engine", ENGINES)
def test_end_to_end_from_the_image_file(exported, engine, size):
    detector = Detector(exported[engine, size], backend=engine, num_threads=1)
    assert detector.score_threshold == 0.7 and detector.max_detections == 100
    for stem in STEMS:
        ref = _reference(stem, size)
        h, w = META["images"][stem]["orig_size_hw"]
        for threshold in (0.7, 0.0):
            detector.score_threshold = threshold
            found = detector.detect(str(IMAGES / f"{stem}.jpg"))
            assert len(found) == int((ref["scores"] > threshold).sum())
            rows = _matched(found, ref, (w, h))
            assert len({r[0] for r in rows}) == len(rows)
            assert all(r[1] for r in rows)
            assert max(r[2] for r in rows) <= BOX_PX_TOL and max(r[3] for r in rows) <= SCORE_TOL
        detector.score_threshold = 0.7


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_give_each_image_its_single_result(exported, engine):
    """Images are grouped by canvas size, never padded: equal sizes share a batch, results equal single runs."""
    detector = Detector(exported[engine, "800"], backend=engine, num_threads=1, score_threshold=0.0)
    images = [_image(s) for s in ("val_00002", "val_00004", "val_00002", "val_00000")]
    singles = [detector.detect(image) for image in images]
    for single, batched in zip(singles, detector.detect_batch(images), strict=True):
        assert np.array_equal(single.class_ids, batched.class_ids)
        np.testing.assert_allclose(batched.xyxy, single.xyxy, rtol=0, atol=1e-3)
        np.testing.assert_allclose(batched.scores, single.scores, rtol=0, atol=1e-5)


def test_cli_exports_the_training_layout_with_no_other_flag(shared_fixtures: Path, tmp_path):
    """``nanodet-export --ckpt checkpoint.pth --out detr.onnx``: main.py's layout, its pickled Namespace admitted."""
    import argparse
    import json

    from nanodet_export.cli import main

    from nanodet_infer.metadata import ModelMetadata

    fixture = shared_fixtures / "detr-r18-s"
    state = torch.load(fixture / "model.pth", weights_only=True)["model"]
    args = argparse.Namespace(**json.loads((fixture / "meta.json").read_text())["args"])
    ckpt = tmp_path / "checkpoint.pth"
    torch.save(
        {
            "model": {k: v.float() for k, v in state.items()},
            "optimizer": {},
            "lr_scheduler": {},
            "epoch": 0,
            "args": args,
        },
        ckpt,
    )
    out = tmp_path / "detr.onnx"
    assert main(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    import onnx

    meta = ModelMetadata.from_properties(
        {p.key: p.value for p in onnx.load(out, load_external_data=False).metadata_props}
    )
    assert meta.model_family == "detr" and meta.num_classes == 91 and meta.class_names[:2] == ("N/A", "person")
    assert (meta.min_size, meta.max_size, meta.no_object_index, meta.num_queries) == (800, 1333, 91, 100)
    assert meta.architecture["assumed"] == [] and meta.architecture["backbone"] == "resnet18"


def test_eval_maps_labels_to_coco_category_ids(exported, tmp_path):
    """Ground truth = the official > 0.7 detections with COCO's ids and names: eval (all queries) scores mAP 1.0
    only if label k is scored as COCO category k (a positional mapping would give ~0)."""
    import json

    from nanodet_infer.cli import main

    categories = META["categories"]
    images, annotations = [], []
    for image_id, stem in enumerate(STEMS):
        ref = _reference(stem, "800")
        h, w = META["images"][stem]["orig_size_hw"]
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "width": w, "height": h})
        for box, label in zip(ref["boxes"][ref["scores"] > 0.7], ref["labels"][ref["scores"] > 0.7], strict=True):
            x0, y0 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
            x1, y1 = min(float(box[2]), w), min(float(box[3]), h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    used = sorted({a["category_id"] for a in annotations})
    gt = {"images": images, "annotations": annotations, "categories": [{"id": i, "name": categories[i]} for i in used]}
    ann, stats = tmp_path / "gt.json", tmp_path / "stats.json"
    ann.write_text(json.dumps(gt))
    code = main(
        [
            "eval",
            "--model",
            str(exported["onnxruntime", "800"]),
            "--ann",
            str(ann),
            "--images",
            str(IMAGES),
            "--json",
            str(stats),
            "--no-progress",
        ]
    )
    assert code == 0
    result = json.loads(stats.read_text())
    assert result["mAP"] == pytest.approx(1.0, abs=1e-3), result
