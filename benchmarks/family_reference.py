"""Each family's own PyTorch reference pipeline, for the benchmark's PyTorch row of a non-NanoDet checkpoint.

What a user of the family's reference code runs on a CPU: the family's PyTorch deploy model (what the exporter
traces: :attr:`nanodet_export.adapter.Prepared.deploy`, e.g. YOLOv7's reparameterized deploy model, the
torchvision-layout SSD / RetinaNet, DETR) and the reference post-process, written here in torch:

* ``yolov7``: upstream ``utils/general.py`` ``non_max_suppression`` (obj > conf, cls *= obj, best class,
  ``max_wh`` class offset, at most ``max_nms`` boxes into NMS, ``max_det`` kept) + ``scale_coords``;
* ``ssd``: torchvision ``SSD.postprocess_detections`` (decode every anchor, clip, softmax, per class above the
  threshold its ``topk_candidates`` best, ``batched_nms``, ``detections_per_img``) + ``transform.postprocess``;
* ``retinanet``: torchvision ``RetinaNet.postprocess_detections`` (per level: sigmoid, above the threshold, its
  ``topk_candidates`` best, decode those, clip; ``batched_nms``, ``detections_per_img``) + ``transform.postprocess``;
* ``detr``: official ``PostProcess`` (softmax with no-object, best real class, cxcywh → xyxy scaled by the image
  size), then the scores above the threshold, as the official demo keeps them.

torchvision is not a dependency, so NMS is :func:`benchmarks.torch_reference.batched_nms` (exact greedy NMS,
torchvision semantics, in torch). Pre-processing is the runtime family's own (numpy/OpenCV): it is tested
bit-identical to each reference's, so the rows compare inference + post-process. Every threshold is the
detector's (the family's defaults unless ``--score-threshold``). Importing this module imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.torch_reference import batched_nms, nms
from nanodet_infer.families.base import Settings
from nanodet_infer.model_spec import resolve_model_spec

Result = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(xyxy [K, 4] original-image pixels, scores [K], class ids [K])``."""

#: upstream non_max_suppression's constants (utils/general.py)
YOLOV7_MAX_WH, YOLOV7_MAX_NMS = 4096, 30000


def deploy_model(checkpoint: Path) -> torch.nn.Module:
    """The family's PyTorch deploy model of ``checkpoint`` (the module the exporter traces), eval mode."""
    from nanodet_export.adapter import CommonArgs
    from nanodet_export.families import resolve

    common = CommonArgs(input_size=None, class_names=None, dynamic=None, fp16=False, check=False)
    return resolve(checkpoint).prepare(checkpoint, common).deploy.eval()


def _settings(detector: Any) -> Settings:
    return Settings(detector.score_threshold, detector.iou_threshold, detector.max_detections, detector.keep_ratio,
                    detector.multi_label)


class FamilyPipeline:
    """Images → detections with the family's PyTorch deploy model and reference post-process (module docstring).

    Calling it returns ``(results, stage_ms)``: one :data:`Result` per image and the summed preprocess /
    inference / postprocess milliseconds. Each image is its own batch (the families' canvases differ per image).
    """

    def __init__(self, model: torch.nn.Module, detector: Any) -> None:
        self.model = model.eval()
        self.spec = resolve_model_spec(detector.backend)
        self.settings = _settings(detector)
        self.family = self.spec.family
        self.postprocess = POSTPROCESS[self.family.name]
        self.label = f"PyTorch deploy model + {REFERENCE_NAMES[self.family.name]}"

    def __call__(self, images: list[np.ndarray]) -> tuple[list[Result], dict[str, float]]:
        stages = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        results = []
        for image in images:
            start = time.perf_counter()
            plan = self.family.plan((image.shape[1], image.shape[0]), self.spec, self.settings)
            tensor = torch.from_numpy(self.family.preprocess(image, plan, self.spec)[None])
            inferred = time.perf_counter()
            with torch.inference_mode():
                outputs = self.model(tensor)
                decoded = time.perf_counter()
                outputs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
                results.append(self.postprocess([o[0] for o in outputs], plan, self.spec.metadata, self.settings))
            done = time.perf_counter()
            stages["preprocess"] += (inferred - start) * 1e3
            stages["inference"] += (decoded - inferred) * 1e3
            stages["postprocess"] += (done - decoded) * 1e3
        return results, stages


def _numpy(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> Result:
    return boxes.numpy().astype(np.float32), scores.numpy().astype(np.float32), labels.numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------------- YOLOv7
def yolov7_postprocess(outputs: Sequence[torch.Tensor], plan: Any, meta: Any, settings: Settings) -> Result:
    """Upstream ``non_max_suppression(pred, conf, iou)`` (best class per box) + ``scale_coords`` for one image's
    ``pred [N, 5 + C]`` (xywh in input pixels, obj, class probabilities)."""
    x = outputs[0]
    x = x[x[:, 4] > settings.score_threshold].clone()
    x[:, 5:] *= x[:, 4:5]
    box = torch.cat([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], dim=1)
    conf, j = x[:, 5:].max(1, keepdim=True)
    x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > settings.score_threshold]
    if x.shape[0] > YOLOV7_MAX_NMS:
        x = x[x[:, 4].argsort(descending=True)[:YOLOV7_MAX_NMS]]
    keep = nms(x[:, :4] + x[:, 5:6] * YOLOV7_MAX_WH, x[:, 4], settings.iou_threshold)[: settings.max_detections]
    det = x[keep]
    # scale_coords(img1_shape, coords, img0_shape): gain and pad recomputed from the two shapes, as upstream
    (w1, h1), (w0, h0) = plan.canvas_size, plan.src_size
    gain = min(h1 / h0, w1 / w0)
    pad_x, pad_y = (w1 - w0 * gain) / 2, (h1 - h0 * gain) / 2
    boxes = det[:, :4].clone()
    boxes[:, [0, 2]] -= pad_x
    boxes[:, [1, 3]] -= pad_y
    boxes /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h0)
    return _numpy(boxes, det[:, 4], det[:, 5].long())


# ---------------------------------------------------------------------------------------------- torchvision
def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor, weights: Sequence[float], clip: float) -> torch.Tensor:
    """torchvision ``BoxCoder.decode_single``: ``[N, 4]`` deltas on ``[N, 4]`` xyxy anchors → xyxy boxes."""
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ctr_x, ctr_y = anchors[:, 0] + 0.5 * widths, anchors[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw, dh = (deltas[:, 2] / ww).clamp(max=clip), (deltas[:, 3] / wh).clamp(max=clip)
    pred_ctr_x, pred_ctr_y = dx * widths + ctr_x, dy * heights + ctr_y
    half_w, half_h = torch.tensor(0.5) * torch.exp(dw) * widths, torch.tensor(0.5) * torch.exp(dh) * heights
    return torch.stack([pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h], dim=1)


def _clip(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``box_ops.clip_boxes_to_image`` to ``size`` ``(W, H)``."""
    return torch.stack([boxes[:, 0].clamp(0, size[0]), boxes[:, 1].clamp(0, size[1]),
                        boxes[:, 2].clamp(0, size[0]), boxes[:, 3].clamp(0, size[1])], dim=1)


def _to_original(boxes: torch.Tensor, plan: Any) -> torch.Tensor:
    """``GeneralizedRCNNTransform.postprocess``: boxes scaled from the resized size to the original, per axis."""
    rw = torch.tensor(plan.src_size[0], dtype=torch.float32) / torch.tensor(plan.resized_size[0], dtype=torch.float32)
    rh = torch.tensor(plan.src_size[1], dtype=torch.float32) / torch.tensor(plan.resized_size[1], dtype=torch.float32)
    return boxes * torch.stack([rw, rh, rw, rh])


def ssd_postprocess(outputs: Sequence[torch.Tensor], plan: Any, meta: Any, settings: Settings) -> Result:
    """torchvision ``SSD.postprocess_detections`` + ``transform.postprocess`` for one image's ``(logits, deltas)``."""
    from nanodet_infer.families.ssd.family import FAMILY

    logits, deltas = outputs[0], outputs[1]
    anchors = torch.tensor(FAMILY.anchors(meta, plan.canvas_size))  # a copy (the cached array is read-only)
    boxes = _clip(decode_boxes(deltas, anchors, meta.box_coder_weights, meta.bbox_xform_clip), plan.resized_size)
    scores = torch.softmax(logits, dim=-1)
    kept_boxes, kept_scores, kept_labels = [], [], []
    for label in range(1, scores.shape[-1]):
        score = scores[:, label]
        keep = score > settings.score_threshold
        score, box = score[keep], boxes[keep]
        score, index = score.topk(min(meta.topk_candidates, score.shape[0]))
        kept_boxes.append(box[index])
        kept_scores.append(score)
        kept_labels.append(torch.full_like(index, label))
    return _select(torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels), plan, settings)


def retinanet_postprocess(outputs: Sequence[torch.Tensor], plan: Any, meta: Any, settings: Settings) -> Result:
    """torchvision ``RetinaNet.postprocess_detections`` + ``transform.postprocess`` for one image's outputs."""
    from nanodet_infer.families.retinanet.anchors import anchors as retinanet_anchors

    logits, deltas = outputs[0], outputs[1]
    anchors, per_level = retinanet_anchors(plan.canvas_size, meta.strides, meta.anchor_sizes, meta.anchor_aspect_ratios)
    anchors = torch.tensor(anchors)  # a copy (the cached array is read-only)
    num_classes = logits.shape[-1]
    kept_boxes, kept_scores, kept_labels = [], [], []
    start = 0
    for count in per_level:
        level_logits, level_deltas = logits[start : start + count], deltas[start : start + count]
        level_anchors = anchors[start : start + count]
        start += count
        scores = torch.sigmoid(level_logits).flatten()
        keep = scores > settings.score_threshold
        scores = scores[keep]
        candidates = torch.where(keep)[0]
        scores, index = scores.topk(min(meta.topk_candidates, candidates.shape[0]))
        candidates = candidates[index]
        anchor_index = torch.div(candidates, num_classes, rounding_mode="floor")
        boxes = decode_boxes(level_deltas[anchor_index], level_anchors[anchor_index], meta.box_coder_weights,
                             meta.bbox_xform_clip)
        kept_boxes.append(_clip(boxes, plan.resized_size))
        kept_scores.append(scores)
        kept_labels.append(candidates % num_classes)
    return _select(torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels), plan, settings)


def _select(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, plan: Any, settings: Settings) -> Result:
    """``batched_nms`` then ``detections_per_img``, boxes rescaled to the original image."""
    keep = batched_nms(boxes, scores, labels, settings.iou_threshold)[: settings.max_detections]
    return _numpy(_to_original(boxes[keep], plan), scores[keep], labels[keep])


# ---------------------------------------------------------------------------------------------- DETR
def detr_postprocess(outputs: Sequence[torch.Tensor], plan: Any, meta: Any, settings: Settings) -> Result:
    """Official ``PostProcess`` for one image's ``(pred_logits [Q, C + 1], pred_boxes [Q, 4])`` at its original size,
    then the queries scoring above the threshold (the official demo's filter)."""
    prob = torch.softmax(outputs[0], -1)
    scores, labels = prob[..., :-1].max(-1)
    cx, cy, w, h = outputs[1].unbind(-1)
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
    width, height = plan.src_size
    boxes = boxes * torch.tensor([width, height, width, height], dtype=torch.float32)
    keep = scores > settings.score_threshold
    return _numpy(boxes[keep], scores[keep], labels[keep])


POSTPROCESS: dict[str, Callable[..., Result]] = {
    "yolov7": yolov7_postprocess, "ssd": ssd_postprocess, "retinanet": retinanet_postprocess,
    "detr": detr_postprocess,
}
"""Family name → its reference post-process in torch."""

REFERENCE_NAMES = {  # the post-process named in the PyTorch row
    "yolov7": "upstream non_max_suppression + scale_coords", "ssd": "torchvision postprocess_detections",
    "retinanet": "torchvision postprocess_detections", "detr": "official PostProcess",
}
