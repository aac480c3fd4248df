"""``nanodet-export --int8`` on the seeded fixture of every other family, without ``--force-int8``.

Each case exports the shared checkpoint quantized, calibrated and checked on the 20 ``shapes-m-256`` images
(the agreement check runs inside the export and must pass), for the families and formats affordable in the
default suite (docs/export.md, "Per family", has the measured table of all). A precision-sensitive model
(the seeded YOLOv7-tiny) passes once accuracy control has restored its most sensitive operations to float; a
collapse that restoring cannot repair is refused.
"""

from __future__ import annotations

from dataclasses import replace

import onnx
import pytest
from conftest import SHAPES
from nanodet_export import export_checkpoint, families, quantize
from nanodet_export.adapter import Int8Rule
from nanodet_export.quantize import RESTORE_TARGET, Int8Request

from nanodet_infer import Detector
from nanodet_infer.errors import ExportError

pytest.importorskip("nncf")

IMAGES = SHAPES / "images"

pytestmark = [pytest.mark.slow, pytest.mark.shared, pytest.mark.usefixtures("one_torch_thread")]

# RetinaNet and DETR pass too (docs/export.md) but take minutes each on 2 cores: they are measured by
# benchmarks/int8_families.py, not in the default suite (these cases: ~55 s together on an idle machine)
CASES = [
    ("yolov7-s/yolov7-s.pt", "onnx"),
    ("yolov7-s/yolov7-s.pt", "openvino"),
    ("yolov7-w6-aux-s/yolov7-w6-aux-s.pt", "onnx"),
    ("tv-ssdlite320/model.pth", "onnx"),
    ("tv-ssdlite320/model.pth", "openvino"),
]


@pytest.mark.parametrize(("checkpoint", "fmt"), CASES, ids=[f"{c.split('/')[0]}-{f}" for c, f in CASES])
def test_int8_export_passes_the_agreement_check_unforced(shared_fixtures, tmp_path, checkpoint, fmt):
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml")
    report = export_checkpoint(shared_fixtures / checkpoint, out, fmt=fmt, int8=Int8Request(calib_images=IMAGES))
    agreement = report.int8.agreement
    assert not report.int8.forced and not agreement.collapsed
    assert agreement.images == 20 and agreement.stable > 0
    detector = Detector(out, num_threads=1)
    assert detector.metadata.precision == "int8" and detector.metadata.calibration["count"] == 20
    assert detector.metadata.calibration["float_layers"]  # the family's head tail stays float


def test_a_precision_sensitive_model_is_restored_by_accuracy_control(shared_fixtures, tmp_path):
    # the seeded, narrow YOLOv7-tiny keeps ~25% of its stable detections through plain INT8 (bf16 alone: 84%)
    out = tmp_path / "m.onnx"
    report = export_checkpoint(
        shared_fixtures / "yolov7-tiny-s/yolov7-tiny-s.pt", out, int8=Int8Request(calib_images=IMAGES, calib_count=4)
    ).int8
    assert report.plain is not None and report.plain.collapsed and report.plain.stable > 0
    assert report.restored and not report.forced
    assert report.agreement.stable == report.plain.stable and report.agreement.matched_fraction >= RESTORE_TARGET
    calibration = Detector(out, num_threads=1).metadata.calibration
    assert "accuracy_control" in calibration["method"]
    assert set(report.restored) <= set(calibration["float_layers"])


def test_a_collapse_that_restoring_cannot_repair_is_refused(shared_fixtures, tmp_path, monkeypatch):
    # without the head tail in float, YOLOv7's one output (box pixels next to probabilities) shares one scale;
    # the restoring step is replaced by one that gives the same collapsed model back
    adapter = families.EXPORT_ADAPTERS["yolov7"]
    monkeypatch.setitem(families.EXPORT_ADAPTERS, "yolov7", replace(adapter, int8=Int8Rule(head_tail=False)))

    def no_repair(source, fmt, inputs, judge, input_name, rule, **_):
        collapsed = tmp_path / "collapsed.onnx"
        quantize.quantize_onnx(source, collapsed, inputs, input_name, rule)
        return onnx.load(str(collapsed)), []

    monkeypatch.setattr(quantize, "restore_accuracy", no_repair)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(ExportError, match=r"only 0% .* survive quantization, even with 0 operations restored"):
        export_checkpoint(
            shared_fixtures / "yolov7-s/yolov7-s.pt", out, int8=Int8Request(calib_images=IMAGES, calib_count=5)
        )
    assert list(out.parent.iterdir()) == []


def test_accuracy_control_that_would_take_too_long_or_fails_is_refused(shared_fixtures, tmp_path, monkeypatch):
    import nncf

    checkpoint = shared_fixtures / "yolov7-tiny-s/yolov7-tiny-s.pt"
    request = Int8Request(calib_images=IMAGES, calib_count=3)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with monkeypatch.context() as patch:  # the estimate (layers x one pass over the images) exceeds the budget
        patch.setattr(quantize, "RESTORE_BUDGET_S", 0.0)
        with pytest.raises(ExportError, match=r"restoring layers to float would take about \d+ min \(58 layers"):
            export_checkpoint(checkpoint, out, int8=request)
    assert list(out.parent.iterdir()) == []

    def broken(*args, **kwargs):
        raise RuntimeError("no\n  quantizer")

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", broken)
    with pytest.raises(ExportError, match=r"accuracy control could not run: no quantizer; nothing was written"):
        export_checkpoint(checkpoint, out, int8=request)
    assert list(out.parent.iterdir()) == []
