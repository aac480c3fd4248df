"""nanodet-export on torchvision checkpoints: the fixtures export with no flag, the ONNX reproduces
torchvision's stored head outputs, and the metadata carries torchvision's transform/anchor/coder facts.

Tolerances: onnxruntime (1 thread, all graph optimisations) against torchvision's outputs (PyTorch on 2
threads): SSDLite 5e-4 on logits up to |39| (measured 1.5e-4; PyTorch's own float32 error against float64
is 1.3e-4 on these inputs), RetinaNet raw_seed0 1e-4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from nanodet_export import export_checkpoint  # noqa: E402
from nanodet_export.cli import EXIT_BAD_INPUT, main  # noqa: E402
from nanodet_models.torchvision_ssd import ssd300_vgg16  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SSDLITE_TOLERANCE = 5e-4
RETINANET_TOLERANCE = 1e-4


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _metadata(path) -> dict:
    """The ``nanodet.*`` entries, JSON values decoded (plain strings stay strings)."""
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return {key.removeprefix("nanodet."): _decode(value) for key, value in props.items()}


def _decode(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@pytest.mark.shared
def test_ssdlite_onnx_reproduces_torchvision_head_outputs(ssdlite_onnx, shared_fixtures):
    session = _session(ssdlite_onnx)
    assert [o.name for o in session.get_outputs()] == ["cls_logits", "bbox_regression"]
    assert session.get_inputs()[0].shape == ["batch", 3, 320, 320]
    for image in ("val_00000", "val_00002", "val_00004"):
        folder = shared_fixtures / "tv-ssdlite320" / image
        x = np.load(folder / "input.npy")
        cls_logits, bbox = session.run(None, {"images": np.concatenate([x, x])})  # batch 2
        for got in (cls_logits[:1], cls_logits[1:]):
            assert np.abs(got - np.load(folder / "cls_logits.npy")).max() <= SSDLITE_TOLERANCE
        assert np.abs(bbox[:1] - np.load(folder / "bbox_regression.npy")).max() <= SSDLITE_TOLERANCE


@pytest.mark.shared
def test_ssdlite_metadata_carries_torchvision_facts(ssdlite_onnx, shared_fixtures):
    meta = _metadata(ssdlite_onnx)
    ref = json.loads((shared_fixtures / "tv-ssdlite320" / "meta.json").read_text())
    assert (meta["schema_version"], meta["model_family"], meta["num_classes"]) == (2, "ssd", 91)
    assert meta["class_names"] == ref["categories"] and meta["background_class"] == 0
    for key in ("image_mean", "image_std"):  # the common 0-255 keys divide back to torchvision's values exactly
        assert [v / 255 for v in meta[key.removeprefix("image_")]] == ref["transform"][key]
    assert (meta["input_size"], meta["dynamic_batch"], meta["dynamic_hw"]) == ([320, 320], True, False)
    assert (meta["scores_output"], meta["boxes_output"]) == ("cls_logits", "bbox_regression")
    assert meta["mean"] == [127.5] * 3 and meta["std"] == [127.5] * 3 and meta["channel_order"] == "RGB"
    boxes = ref["anchor_generator"]
    assert meta["default_box_aspect_ratios"] == boxes["aspect_ratios"]
    np.testing.assert_allclose(meta["default_box_scales"], boxes["scales"], rtol=0, atol=1e-15)
    assert (meta["default_box_steps"], meta["default_box_clip"]) == ([], boxes["clip"])  # [] for None
    assert meta["feature_map_sizes"] == [[s, s] for s in (20, 10, 5, 3, 2, 1)]
    assert meta["box_coder_weights"] == ref["box_coder"]["weights"]
    assert meta["bbox_xform_clip"] == ref["box_coder"]["bbox_xform_clip"]
    post = ref["postprocess"]
    for key in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates"):
        assert meta[key] == post[key], key
    assert meta["architecture"]["norm"] == "BatchNorm2d eps 0.001 (assumed)"
    assert meta["architecture"]["reduced_tail"] is True
    assert meta["source_sha256"] == ref["checkpoint"]["sha256"]


@pytest.mark.shared
@pytest.mark.slow
def test_retinanet_onnx_has_dynamic_hw_and_reproduces_raw_seed0(retinanet_onnx, shared_fixtures):
    session = _session(retinanet_onnx)
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    folder = shared_fixtures / "tv-retinanet-r50" / "raw_seed0"
    cls_logits, bbox = session.run(None, {"images": np.load(folder / "input.npy")})
    assert cls_logits.shape == (1, 1161, 91)
    assert np.abs(cls_logits - np.load(folder / "cls_logits.npy")).max() <= RETINANET_TOLERANCE
    assert np.abs(bbox - np.load(folder / "bbox_regression.npy")).max() <= RETINANET_TOLERANCE
    meta = _metadata(retinanet_onnx)
    ref = json.loads((shared_fixtures / "tv-retinanet-r50" / "meta.json").read_text())
    assert meta["model_family"] == "retinanet" and "background_class" not in meta
    assert (meta["dynamic_hw"], meta["input_size"]) == (True, [1344, 800])
    transform = ref["transform"]
    assert [meta["min_size"]] == transform["min_size"] and meta["max_size"] == transform["max_size"]
    assert meta["size_divisible"] == transform["size_divisible"]
    assert [v / 255 for v in meta["mean"]] == transform["image_mean"]
    assert [v / 255 for v in meta["std"]] == transform["image_std"]
    assert meta["anchor_sizes"] == ref["anchor_generator"]["sizes"]
    assert meta["anchor_aspect_ratios"] == ref["anchor_generator"]["aspect_ratios"]
    assert meta["strides"] == [8, 16, 32, 64, 128]
    assert meta["box_coder_weights"] == ref["box_coder"]["weights"]
    for key in ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates"):
        assert meta[key] == ref["postprocess"][key], key
    assert meta["class_names"] == ref["categories"]


@pytest.mark.slow
def test_ssd300_vgg16_exports_through_the_same_path(tmp_path):
    torch.manual_seed(0)
    model = ssd300_vgg16(num_classes=4)
    ckpt = tmp_path / "ssd300.pth"
    torch.save({"model": model.state_dict(), "epoch": 1}, ckpt)
    # the built-in parity check is exercised by the SSDLite and RetinaNet exports; here one direct comparison
    report = export_checkpoint(ckpt, tmp_path / "ssd300.onnx", simplify=False, check=False,
                               class_names=["bg", "a", "b", "c"])
    arch = report.metadata.architecture
    assert (report.family, arch["builder"], arch["assumed"], arch["norm"]) == ("ssd", "ssd300_vgg16", [], "none")
    assert report.output_shapes == {"cls_logits": ["batch", "priors", 4], "bbox_regression": ["batch", "priors", 4]}
    meta = _metadata(report.path)
    assert meta["feature_map_sizes"] == [[s, s] for s in (38, 19, 10, 5, 3, 1)]
    assert meta["default_box_scales"] == [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
    assert meta["default_box_steps"] == [8, 16, 32, 64, 100, 300]
    assert meta["default_box_aspect_ratios"] == [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    assert [v / 255 for v in meta["std"]] == [1 / 255] * 3 and meta["class_names"] == ["bg", "a", "b", "c"]
    x = np.random.default_rng(1).standard_normal((1, 3, 300, 300), dtype=np.float32)
    cls_logits, bbox = _session(report.path).run(None, {"images": x})
    with torch.no_grad():
        want_cls, want_bbox = (t.numpy() for t in model.eval()(torch.from_numpy(x)))
    assert cls_logits.shape == (1, 8732, 4)
    for got, want in ((cls_logits, want_cls), (bbox, want_bbox)):  # the export's FP32 rule, max(1e-4, 1e-5 x max)
        assert np.abs(got - want).max() <= max(1e-4, 1e-5 * np.abs(want).max())


@pytest.mark.shared
def test_nanodet_only_options_are_refused_for_torchvision(shared_fixtures, tmp_path, capsys):
    ckpt = str(shared_fixtures / "tv-ssdlite320" / "model.pth")
    assert main(["--ckpt", ckpt, "--out", str(tmp_path / "m.onnx"), "--input-size", "320,320"]) == EXIT_BAD_INPUT
    assert "--input-size does not apply to torchvision checkpoints" in capsys.readouterr().err
    assert main(["--ckpt", ckpt, "--out", str(tmp_path / "m.onnx"), "--config", "x.yml"]) == EXIT_BAD_INPUT
    assert "--config does not apply to ssd checkpoints" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.shared
def test_parity_failure_on_openvino_is_exit_1_and_writes_nothing(shared_fixtures, tmp_path, monkeypatch, capsys):
    from nanodet_export import parity

    compare = parity.compare
    off = 0.05  # above the SSDLite tolerances (~3e-3), as a broken conversion would be
    monkeypatch.setattr(
        parity, "compare", lambda ref, cand, xs: compare(ref, lambda x: {k: v + off for k, v in cand(x).items()}, xs)
    )
    out = tmp_path / "m.xml"
    code = main(
        ["--ckpt", str(shared_fixtures / "tv-ssdlite320" / "model.pth"), "--out", str(out), "--format", "openvino"]
    )
    assert code == 1 and "parity check failed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_reference_noise_widens_the_tolerance_only_as_far_as_pytorch_itself_moves():
    from nanodet_export import parity

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).eval()
    model[2].weight.data *= 1000  # large outputs: float32 and float16 rounding show
    samples = [np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)]
    names = ("a",)
    f32 = parity.reference_noise(torch.nn.Sequential(model, _First()), samples, names, fp16=False)["a"]
    f16 = parity.reference_noise(torch.nn.Sequential(model, _First()), samples, names, fp16=True)["a"]
    assert 0 < f32 < 1e-3 < f16  # float64 copy: float32 rounding only; FP16 weights: far more
    case = parity.ParityCase((1, 3, 16, 16), {"a": 0.0}, {"a": 1.0})
    assert parity.tolerances([case], fp16=False, noise={"a": f32}) == {"a": max(1e-4, 4 * f32)}
    assert parity.tolerances([case], fp16=True, noise={"a": f16}) == {"a": max(5e-2, 4 * f16)}


class _First(torch.nn.Module):
    """Wrap a single output as the one-element tuple the parity runners expect."""

    def forward(self, x):
        return (x,)


def test_other_torchvision_detectors_are_refused_by_name(tmp_path, capsys):
    ckpt = tmp_path / "frcnn.pth"
    torch.save({"rpn.head.conv.0.0.weight": torch.zeros(1), "roi_heads.box_head.fc6.weight": torch.zeros(1)}, ckpt)
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "torchvision Faster R-CNN" in err and len(err.strip().splitlines()) == 1


def test_bn_eps_is_refused_for_nanodet(tmp_path, capsys):
    ckpt = tmp_path / "nanodet.pth"
    torch.save({"state_dict": {"head.gfl_cls.0.weight": torch.zeros(1)}}, ckpt)  # recognised as NanoDet-Plus
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "m.onnx"), "--bn-eps", "0"]) == EXIT_BAD_INPUT
    assert "--bn-eps does not apply to nanodet-plus checkpoints" in capsys.readouterr().err


@pytest.mark.parametrize("builder", ["ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn"])
def test_model_definitions_agree_with_the_runtime_table(builder):
    """The exporter reads the builders' facts from the runtime's tables only (``ssd.section.BUILDERS``, the
    ``retinanet`` section's defaults); the torch models must give the runtime's anchors' rows, level by level
    (feature map size x the head's anchors per location) and in total."""
    from nanodet_export.torchvision_export import builder_keys
    from nanodet_models.torchvision_checkpoint import TorchvisionModel
    from nanodet_models.torchvision_retinanet import RetinaNet
    from nanodet_models.torchvision_ssd import ssd300_vgg16, ssdlite320_mobilenet_v3_large

    from nanodet_infer.families.retinanet.anchors import anchors
    from nanodet_infer.families.ssd.default_boxes import default_boxes

    torch.manual_seed(0)
    builders = {"ssd300_vgg16": ssd300_vgg16, "ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large}
    family = "retinanet" if builder.startswith("retinanet") else "ssd"
    model = (RetinaNet if family == "retinanet" else builders[builder])(num_classes=2).eval()
    keys = builder_keys(TorchvisionModel(model, builder, family, 2, None))
    if family == "ssd":
        width, height = keys["input_size"]
        ratios = keys["default_box_aspect_ratios"]
        sizes = [(w, h) for h, w in keys["feature_map_sizes"]]
        want = [w * h * (2 + 2 * len(r)) for (w, h), r in zip(sizes, ratios, strict=True)]
        total = len(default_boxes(sizes, (width, height), ratios, keys["default_box_scales"], None, True))
        per_location = [m[-1].out_channels // 2 for m in _last_convs(model.head.classification_head.module_list)]
    else:
        width, height = 128, 96
        boxes, want = anchors((width, height), keys["strides"], keys["anchor_sizes"], keys["anchor_aspect_ratios"])
        total = len(boxes)
        per_location = [model.head.classification_head.cls_logits.out_channels // 2] * len(want)
    with torch.no_grad():
        x = torch.zeros(1, 3, height, width)
        features = model.backbone(x)
        rows = model(x)[0].shape[1]
    got = [f.shape[2] * f.shape[3] * a for f, a in zip(features, per_location, strict=True)]
    assert (got, rows) == (list(want), total)


def _last_convs(module_list: torch.nn.ModuleList) -> list[torch.nn.Sequential]:
    """Each SSD level's prediction block as a sequence ending in its final conv (plain SSD: the conv alone)."""
    return [m if isinstance(m, torch.nn.Sequential) else torch.nn.Sequential(m) for m in module_list]
