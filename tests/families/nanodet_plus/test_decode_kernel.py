"""The compiled decode kernels give bit-identical results to the numpy paths they replace.

``decode_boxes`` (DFL expectation → clamped boxes) on random, extreme and non-finite logits, and
``boxes_to_original`` (upstream's ``warp_boxes``) on stretch, letterbox and arbitrary perspective plans.
"""

from __future__ import annotations

import numpy as np
import pytest

from nanodet_infer.families.nanodet_plus import decode_kernel
from nanodet_infer.families.nanodet_plus.decode import decode_boxes, make_priors
from nanodet_infer.families.nanodet_plus.resize import InputPlan, boxes_to_original, plan_input


def test_kernel_is_built() -> None:
    # Not a skip: an install that silently lost its kernel would post-process slower with every other test green.
    assert decode_kernel._decode_kernel is not None, "the decode kernel is not built: run pip install -e ."


def _both(monkeypatch: pytest.MonkeyPatch, call):  # noqa: ANN001, ANN202
    """``call()`` on the numpy path, then on the kernel path (which must really call a kernel)."""
    results, calls = [], []
    for flag in (False, True):
        with monkeypatch.context() as patch:
            patch.setattr(decode_kernel, "AVAILABLE", flag)
            for name in ("dfl_boxes", "warp_boxes"):
                kernel = getattr(decode_kernel, name)
                patch.setattr(decode_kernel, name, lambda *a, _k=kernel, _f=flag: calls.append(_f) or _k(*a))
            results.append(call())
    assert calls and all(calls), calls  # kernels ran, and only on the kernel path
    return results


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, NaN included (``array_equal`` alone would call -0.0 and 0.0 the same)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reg_max", [7, 10, 16])
def test_decode_boxes_identical(monkeypatch: pytest.MonkeyPatch, seed: int, reg_max: int) -> None:
    rng = np.random.default_rng(seed)
    canvas = (int(rng.integers(32, 700)), int(rng.integers(32, 700)))
    priors = make_priors(canvas, (8, 16, 32, 64))
    rows = rng.choice(len(priors), min(len(priors), 600), replace=False)
    logits = rng.normal(0, float(rng.choice([0.5, 3.0, 40.0])), (len(rows), 4 * (reg_max + 1))).astype(np.float32)
    logits[rng.random(logits.shape) < 0.01] = np.float32(3e38)  # huge finite differences overflow exp
    expected, got = _both(monkeypatch, lambda: decode_boxes(logits, priors[rows], reg_max, canvas))
    assert _same(expected, got)


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan])
def test_decode_boxes_identical_on_non_finite_logits(monkeypatch: pytest.MonkeyPatch, special: float) -> None:
    rng = np.random.default_rng(7)
    priors = make_priors((256, 256), (8, 16, 32, 64))[:300]
    logits = rng.normal(0, 2, (300, 32)).astype(np.float32)
    logits[rng.random(logits.shape) < 0.05] = special
    logits[:8] = special  # whole sides of one value
    expected, got = _both(monkeypatch, lambda: decode_boxes(logits, priors, 7, (256, 256)))
    assert _same(expected, got)
    assert decode_boxes(logits[:0], priors[:0], 7, (256, 256)).shape == (0, 4)


def _plans() -> list[InputPlan]:
    plans = [
        plan_input((1280, 720), (320, 320), keep_ratio=False, dynamic_hw=False),
        plan_input((1280, 720), (320, 320), keep_ratio=True, dynamic_hw=False),
        plan_input((333, 999), (416, 416), keep_ratio=True, dynamic_hw=True),
    ]
    perspective = np.array([[0.9, 0.1, 5.0], [-0.05, 1.1, -3.0], [1e-4, -2e-4, 1.0]])
    plans.append(InputPlan(plans[0].src_size, plans[0].content_size, plans[0].canvas_size, perspective))
    return plans


@pytest.mark.parametrize("plan", _plans(), ids=["stretch", "letterbox", "dynamic", "perspective"])
def test_boxes_to_original_identical(monkeypatch: pytest.MonkeyPatch, plan: InputPlan) -> None:
    rng = np.random.default_rng(3)
    width, height = plan.canvas_size
    xy = rng.uniform(-20, max(width, height) + 20, (500, 2))
    wh = rng.uniform(0, 200, (500, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    boxes[:2] = [[np.nan, 1, 2, 3], [0, 0, 0, 0]]  # (NMS drops non-finite boxes before this runs)
    expected, got = _both(monkeypatch, lambda: boxes_to_original(boxes, plan))
    assert _same(expected, got)
    empty = _both(monkeypatch, lambda: boxes_to_original(np.zeros((0, 4), np.float32), plan))
    assert all(e.shape == (0, 4) and e.dtype == np.float32 for e in empty)


def test_bad_buffers_raise() -> None:
    kernel = decode_kernel._decode_kernel
    with pytest.raises(ValueError, match="inconsistent"):
        kernel.dfl_boxes(np.zeros(8 * 3 * 4, np.float32), np.zeros((2, 3), np.float32), 7, 1.0, 1.0,
                         np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="inconsistent"):
        kernel.warp_boxes(np.zeros((2, 4), np.float32), np.eye(2), 1.0, 1.0, np.empty((2, 4), np.float32))
