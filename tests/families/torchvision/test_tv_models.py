"""torchvision-layout SSD300-VGG16 / SSDLite320 / RetinaNet-R50-FPN: key layout, strict loading, forward parity.

References: ``../shared/fixtures/tv-ssdlite320`` and ``tv-retinanet-r50`` (torchvision 0.28's own outputs, run
on 2 threads). Our models run on 1 thread here, which only reorders float32 sums: the head outputs agree
within 1e-4 (measured: SSDLite logits 5.9e-5 on |logits| ≤ 39, RetinaNet 1.4e-5; bit-exact on 2 threads).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from nanodet_models.torchvision_checkpoint import (  # noqa: E402
    build_torchvision_model,
    identify,
    read_torchvision_checkpoint,
    upgrade_legacy_keys,
)
from nanodet_models.torchvision_common import COCO_V91_NAMES, NormChoice  # noqa: E402
from nanodet_models.torchvision_retinanet import RetinaNet  # noqa: E402
from nanodet_models.torchvision_ssd import ssd300_vgg16, ssdlite320_mobilenet_v3_large  # noqa: E402

from nanodet_infer.errors import CheckpointError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: max |Δ| of our head outputs against torchvision's stored ones (1 vs 2 threads: float32 summation order)
HEAD_TOLERANCE = 1e-4
IMAGES = ("val_00000", "val_00002", "val_00004")


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_equal_torchvision_documented_ones():
    # torchvision's model docs: ssd300_vgg16 35,641,826; ssdlite320_mobilenet_v3_large 3,440,060;
    # retinanet_resnet50_fpn 34,014,999 (its COCO model: FrozenBatchNorm2d, whose statistics are buffers).
    assert _params(ssd300_vgg16()) == 35_641_826
    assert _params(ssdlite320_mobilenet_v3_large()) == 3_440_060
    assert _params(RetinaNet(norm=NormChoice("frozen", 0.0))) == 34_014_999


def test_ssd300_layout_shapes_and_l2norm():
    model = ssd300_vgg16(num_classes=5).eval()
    sd = model.state_dict()
    # torchvision's SSDFeatureExtractorVGG keys: conv4_3 in features, pool4..FC7 in extra.0 (FC6/FC7 at .7.1/.7.3)
    for key, shape in {
        "backbone.scale_weight": (512,),
        "backbone.features.21.weight": (512, 512, 3, 3),
        "backbone.extra.0.1.weight": (512, 512, 3, 3),
        "backbone.extra.0.7.1.weight": (1024, 512, 3, 3),
        "backbone.extra.0.7.3.weight": (1024, 1024, 1, 1),
        "backbone.extra.4.2.weight": (256, 128, 3, 3),
        "head.classification_head.module_list.0.weight": (5 * 4, 512, 3, 3),
        "head.classification_head.module_list.1.weight": (5 * 6, 1024, 3, 3),
        "head.regression_head.module_list.5.weight": (4 * 4, 256, 3, 3),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert torch.equal(sd["backbone.scale_weight"], torch.full((512,), 20.0))
    x = torch.randn(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps = model.backbone(x)
        conv4_3 = model.backbone.features(x)
        cls_logits, bbox = model(x)
    assert [tuple(m.shape[1:]) for m in maps] == [
        (512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)
    ]  # fmt: skip
    assert tuple(cls_logits.shape) == (1, 8732, 5) and tuple(bbox.shape) == (1, 8732, 4)
    # conv4_3 is L2-normalised over channels and scaled by 20 (F.normalize, eps 1e-12)
    norm = conv4_3.norm(dim=1, keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(maps[0], 20 * conv4_3 / norm, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def ssdlite(shared_fixtures):
    return read_torchvision_checkpoint(shared_fixtures / "tv-ssdlite320" / "model.pth")


@pytest.fixture(scope="module")
def retinanet(shared_fixtures):
    return read_torchvision_checkpoint(shared_fixtures / "tv-retinanet-r50" / "model_fp16.pth")


@pytest.mark.shared
def test_ssdlite_fixture_loads_strictly_with_its_facts(ssdlite):
    built = build_torchvision_model(ssdlite.state_dict)
    assert (built.architecture, built.family, built.num_classes) == ("ssdlite320_mobilenet_v3_large", "ssd", 91)
    assert built.details == {"reduced_tail": True}
    assert built.norm == NormChoice("batchnorm", 0.001)
    assert built.assumed == ("backbone norm BatchNorm2d eps 0.001",)
    bns = [m for m in built.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 0.001 for m in bns)
    assert ssdlite.source_format == "state_dict" and ssdlite.stored_dtype == "float32"


@pytest.mark.shared
@pytest.mark.parametrize("image", IMAGES)
def test_ssdlite_head_outputs_match_torchvision(ssdlite, shared_fixtures, image):
    model = build_torchvision_model(ssdlite.state_dict).model
    folder = shared_fixtures / "tv-ssdlite320" / image
    with torch.no_grad():
        cls_logits, bbox = model(torch.from_numpy(np.load(folder / "input.npy")))
    assert np.abs(cls_logits.numpy() - np.load(folder / "cls_logits.npy")).max() <= HEAD_TOLERANCE
    assert np.abs(bbox.numpy() - np.load(folder / "bbox_regression.npy")).max() <= HEAD_TOLERANCE


@pytest.mark.shared
def test_retinanet_fp16_fixture_loads_and_matches_raw_seed0(retinanet, shared_fixtures):
    assert retinanet.stored_dtype == "float16"
    assert all(v.dtype == torch.float32 for v in retinanet.state_dict.values() if v.is_floating_point())
    built = build_torchvision_model(retinanet.state_dict)
    assert (built.architecture, built.family, built.num_classes) == ("retinanet_resnet50_fpn", "retinanet", 91)
    assert built.norm == NormChoice("batchnorm", 1e-5)  # num_batches_tracked keys: nn.BatchNorm2d
    folder = shared_fixtures / "tv-retinanet-r50" / "raw_seed0"
    with torch.no_grad():
        cls_logits, bbox = built.model(torch.from_numpy(np.load(folder / "input.npy")))
    assert tuple(cls_logits.shape) == (1, 1161, 91)  # P6 stride (64, 48): feature sizes ceil-halve
    assert np.abs(cls_logits.numpy() - np.load(folder / "cls_logits.npy")).max() <= HEAD_TOLERANCE
    assert np.abs(bbox.numpy() - np.load(folder / "bbox_regression.npy")).max() <= HEAD_TOLERANCE


def _retinanet_transform(path) -> torch.Tensor:
    """torchvision's GeneralizedRCNNTransform (eval, 800/1333, ImageNet mean/std, pad /32), written in torch."""
    cv2 = pytest.importorskip("cv2")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    img = torch.from_numpy(rgb).permute(2, 0, 1).contiguous().float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    img = (img - mean) / std
    h, w = img.shape[-2:]
    scale = min(800 / min(h, w), 1333 / max(h, w))
    img = F.interpolate(
        img[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )
    padded = torch.zeros(1, 3, -(-img.shape[2] // 32) * 32, -(-img.shape[3] // 32) * 32)
    padded[:, :, : img.shape[2], : img.shape[3]] = img
    return padded


@pytest.mark.shared
@pytest.mark.slow
def test_retinanet_head_outputs_match_torchvision_on_a_real_image(retinanet, shared_fixtures):
    folder = shared_fixtures / "tv-retinanet-r50" / "val_00004"
    x = _retinanet_transform(shared_fixtures / "shapes-m-256" / "images" / "val_00004.jpg")
    sample = np.load(folder / "input_sample.npz")
    assert list(x.shape) == list(sample["input_shape"])
    # the transformed input: torch on 1 thread vs 2 differs by ≤ 7e-7 (fixture README)
    assert np.abs(x[0][:, sample["rows"]][:, :, sample["cols"]].numpy() - sample["values"]).max() <= 2e-6
    model = build_torchvision_model(retinanet.state_dict).model
    with torch.no_grad():
        cls_logits, bbox = (t[0].numpy() for t in model(x))
    head = np.load(folder / "head_sparse.npz")
    assert cls_logits.shape == (int(head["num_anchors"]), 91)
    assert np.abs(cls_logits.reshape(-1)[head["cls_index"]] - head["cls_logit"]).max() <= HEAD_TOLERANCE
    assert np.abs(cls_logits[head["sample_index"]] - head["sample_cls_logits"]).max() <= HEAD_TOLERANCE
    assert np.abs(bbox[head["anchor_index"]] - head["bbox_regression"]).max() <= HEAD_TOLERANCE


# ---------------------------------------------------------------------------------------------- file formats
@pytest.mark.shared
def test_train_py_checkpoint_with_args_namespace_loads_weights_only(ssdlite, tmp_path):
    weights = {f"module.{k}": v for k, v in ssdlite.state_dict.items()}  # DistributedDataParallel prefix
    scheduler = {"milestones": Counter({16: 1, 22: 1}), "last_epoch": 3}
    path = tmp_path / "checkpoint.pth"
    torch.save(
        {
            "model": weights,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
            "lr_scheduler": scheduler,
            "args": argparse.Namespace(model="ssdlite320_mobilenet_v3_large", lr=0.15, data_path="/data"),
            "epoch": 3,
        },
        path,
    )
    loaded = read_torchvision_checkpoint(path)
    assert loaded.source_format == "train.py"
    assert loaded.state_dict.keys() == ssdlite.state_dict.keys()
    assert build_torchvision_model(loaded.state_dict).architecture == "ssdlite320_mobilenet_v3_large"


def test_checkpoint_with_code_is_refused_without_trust(tmp_path):
    from nanodet_infer.errors import UnsafeCheckpointError

    path = tmp_path / "pickled.pth"
    torch.save({"model": ssdlite320_mobilenet_v3_large, "epoch": 1}, path)  # a pickled callable
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        read_torchvision_checkpoint(path)


# ---------------------------------------------------------------------------------------------- recognition
def _fake(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(shape) for k, shape in keys.items()}


RETINA_V1 = {
    "head.classification_head.cls_logits.weight": (9 * 91, 256, 3, 3),
    "backbone.fpn.extra_blocks.p6.weight": (256, 256, 3, 3),
    **{f"backbone.body.layer3.{i}.conv1.weight": (1,) for i in range(6)},
}


@pytest.mark.parametrize(
    ("keys", "found"),
    [
        ({"rpn.head.conv.0.0.weight": (1,), "roi_heads.box_predictor.cls_score.weight": (1,)}, "Faster R-CNN"),
        ({"rpn.head.conv.0.0.weight": (1,), "roi_heads.mask_predictor.mask_fcn_logits.weight": (1,)}, "Mask R-CNN"),
        (
            {"head.classification_head.cls_logits.weight": (1,), "head.regression_head.bbox_ctrness.weight": (1,)},
            "FCOS",
        ),
        ({**RETINA_V1, "head.classification_head.conv.0.1.weight": (256,)}, "RetinaNet v2"),
        ({**RETINA_V1, "backbone.fpn.extra_blocks.p6.weight": (256, 2048, 3, 3)}, "from C5"),
        ({**RETINA_V1, "backbone.body.layer3.22.conv1.weight": (1,)}, "layer3 has 23 blocks"),
        ({"head.classification_head.module_list.0.weight": (1,), "backbone.body.conv1.weight": (1,)}, "than VGG16"),
        ({"backbone.conv1.weight": (1,)}, "not a torchvision SSD300"),
    ],
)
def test_other_architectures_are_refused_naming_what_was_found(keys, found):
    with pytest.raises(CheckpointError, match=found) as info:
        identify(_fake(keys))
    assert "\n" not in str(info.value)


def test_recognises_the_three_builders():
    assert identify(_fake(RETINA_V1)) == "retinanet_resnet50_fpn"
    assert identify(ssd300_vgg16(num_classes=2).state_dict()) == "ssd300_vgg16"
    assert identify(ssdlite320_mobilenet_v3_large(num_classes=2).state_dict()) == "ssdlite320_mobilenet_v3_large"


def test_strict_loading_lists_missing_and_unexpected_keys():
    sd = ssdlite320_mobilenet_v3_large(num_classes=3).state_dict()
    sd.pop("backbone.extra.3.2.1.bias")
    sd["backbone.extra.9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): backbone\.extra\.3\.2\.1\.bias.*unexpected"):
        build_torchvision_model(sd)


def test_num_classes_reduced_tail_and_frozen_norm_are_read_from_the_keys():
    sd = ssdlite320_mobilenet_v3_large(num_classes=7, reduced_tail=False).state_dict()
    built = build_torchvision_model(sd, bn_eps=1e-3)
    assert built.num_classes == 7 and built.details == {"reduced_tail": False} and built.assumed == ()
    frozen = {k: v for k, v in RetinaNet(num_classes=4).state_dict().items() if "num_batches_tracked" not in k}
    built = build_torchvision_model(frozen, bn_eps=0.0)
    assert built.norm == NormChoice("frozen", 0.0, eps_given=True) and built.num_classes == 4


def test_frozen_batchnorm_computes_batchnorm_eval():
    from nanodet_models.torchvision_common import FrozenBatchNorm2d

    bn = torch.nn.BatchNorm2d(8, eps=1e-5).eval()
    gen = torch.Generator().manual_seed(0)
    for name in ("weight", "bias", "running_mean"):
        getattr(bn, name).data = torch.randn(8, generator=gen)
    bn.running_var.data = torch.rand(8, generator=gen) + 0.5
    frozen = FrozenBatchNorm2d(8, eps=1e-5)
    frozen.load_state_dict({k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"})
    x = torch.randn(2, 8, 5, 5, generator=gen)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-6, atol=1e-6)


def test_legacy_retinanet_head_and_fpn_keys_are_upgraded():
    old = {
        "head.classification_head.conv.6.weight": 1,
        "head.regression_head.conv.2.bias": 2,
        "backbone.fpn.inner_blocks.1.weight": 3,
        "backbone.fpn.layer_blocks.0.0.bias": 4,
    }
    assert upgrade_legacy_keys(old) == {
        "head.classification_head.conv.3.0.weight": 1,
        "head.regression_head.conv.1.0.bias": 2,
        "backbone.fpn.inner_blocks.1.0.weight": 3,
        "backbone.fpn.layer_blocks.0.0.bias": 4,
    }


@pytest.mark.shared
def test_coco_names_match_the_fixture(shared_fixtures):
    meta = json.loads((shared_fixtures / "tv-ssdlite320" / "meta.json").read_text())
    assert list(COCO_V91_NAMES) == meta["categories"]
