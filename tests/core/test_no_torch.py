"""The runtime never imports torch, onnx, onnxsim or nncf, and ``import nanodet_infer`` loads no engine nor Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import SHAPES

BLOCKED = ("torch", "onnx", "onnxsim", "nncf")

SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {{name}}")
            return None

    sys.meta_path.insert(0, Block())

    import nanodet_infer

    engines = [m for m in ("cv2", "onnxruntime", "openvino", "ray") if m in sys.modules]
    assert not engines, f"import nanodet_infer loaded {{engines}}"

    from nanodet_infer import Detector

    for backend in ("onnxruntime", "openvino", "auto"):
        det = Detector({model!r}, backend=backend, num_threads=1, score_threshold=0.3)
        result = det({image!r})
        assert len(result.scores) > 0, backend
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok", len(result.scores))
    """
)


def test_runtime_works_with_torch_onnx_onnxsim_nncf_blocked():
    script = SCRIPT.format(
        blocked=BLOCKED,
        model=str(SHAPES / "upstream_export.onnx"),
        image=str(SHAPES / "images" / "val_00000.jpg"),
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
