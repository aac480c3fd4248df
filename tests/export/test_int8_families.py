"""``nanodet-export --int8`` on the seeded fixture of every other family, without ``--force-int8``.

Each case exports the shared checkpoint quantized, calibrated and checked on the 20 ``shapes-m-256`` images
(the agreement check runs inside the export and must pass), for the families and formats affordable in the
default suite (docs/export.md, "Per family", has the measured table of all). A deliberately collapsed head
(YOLOv7's one output quantized with one activation scale) must still be refused.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import SHAPES
from nanodet_export import export_checkpoint, families
from nanodet_export.adapter import Int8Rule
from nanodet_export.quantize import Int8Request

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


def test_a_collapsed_head_is_refused(shared_fixtures, tmp_path, monkeypatch):
    # without the head tail in float, YOLOv7's one output (box pixels next to probabilities) shares one scale
    adapter = families.EXPORT_ADAPTERS["yolov7"]
    monkeypatch.setitem(families.EXPORT_ADAPTERS, "yolov7", replace(adapter, int8=Int8Rule(head_tail=False)))
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(ExportError, match=r"only 0% of the stable f32 detections survive"):
        export_checkpoint(
            shared_fixtures / "yolov7-s/yolov7-s.pt", out, int8=Int8Request(calib_images=IMAGES, calib_count=5)
        )
    assert list(out.parent.iterdir()) == []
