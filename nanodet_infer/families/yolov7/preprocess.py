"""Image → YOLOv7 network input: upstream's ``utils/datasets.py`` ``letterbox`` and ``detect.py``'s conversion.

Conventions: sizes are ``(W, H)`` (upstream's ``new_shape`` is ``(H, W)``; here it is ``(W, H)`` like every
size in this project); images are BGR ``uint8 [H, W, 3]``; the network input is float32 ``[3, Hc, Wc]``.

Upstream, for an image of ``(h0, w0)`` and ``new_shape``:

1. ``r = min(new_h / h0, new_w / w0)`` (``min(r, 1)`` unless ``scaleup``); content
   ``new_unpad = (int(round(w0 * r)), int(round(h0 * r)))``; padding ``dw, dh = new - new_unpad``, reduced
   ``mod stride`` when ``auto`` (detect.py's minimal rectangle: each image gets its own canvas, a multiple of
   ``stride``), or 0 with the content stretched to ``new_shape`` when ``scaleFill`` (``auto`` wins when both);
   then halved.
2. ``cv2.resize(INTER_LINEAR)`` to ``new_unpad`` only when the size changes; ``cv2.copyMakeBorder`` with
   ``top = int(round(dh - 0.1))``, ``bottom = int(round(dh + 0.1))`` (left/right likewise, Python's
   round-half-even), colour 114.
3. ``img[:, :, ::-1].transpose(2, 0, 1)`` (RGB, CHW), float32, true division by 255 — here the shared
   :func:`nanodet_infer.preprocess.normalize_into` with mean 0 / std 255 (bit-identical to
   ``x / np.float32(255)``).

``auto=False`` is the square (``new_shape``-sized) letterbox a static-shape export needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import cv2
import numpy as np

from ...arguments import check_items, check_positive_int
from ...errors import InvalidArgumentError, InvalidImageError
from ...preprocess import canvas_out, check_image, normalize_into


@dataclass(frozen=True)
class LetterboxPlan:
    """How one image is letterboxed.

    ``src_size``: original image ``(W, H)``. ``content_size``: ``(W, H)`` of the resized image
    (upstream's ``new_unpad``). ``canvas_size``: ``(W, H)`` of the padded result (the network input).
    ``ratio``: upstream's ``(w_ratio, h_ratio)`` (equal unless ``scale_fill``). ``pad``: upstream's
    ``(dw, dh)``, the padding per side as a float (halved). ``border``: the integer
    ``(top, bottom, left, right)`` rows/columns added.
    """

    src_size: tuple[int, int]
    content_size: tuple[int, int]
    canvas_size: tuple[int, int]
    ratio: tuple[float, float]
    pad: tuple[float, float]
    border: tuple[int, int, int, int]


def _positive_size(name: str, size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` (an integer for a square, or ``(W, H)``) as two positive ``int``."""
    if isinstance(size, Integral) and not isinstance(size, bool):
        side = check_positive_int(name, size)
        return side, side
    width, height = check_items(name, size, f"pass an integer or (W, H), e.g. {name}=640", 2)
    return check_positive_int(f"{name} width", width), check_positive_int(f"{name} height", height)


def plan_letterbox(
    src_size: Sequence[int],
    new_shape: int | Sequence[int] = 640,
    *,
    stride: int = 32,
    auto: bool = True,
    scale_fill: bool = False,
    scaleup: bool = True,
) -> LetterboxPlan:
    """Upstream ``letterbox``'s geometry for a ``src_size`` ``(W, H)`` image and ``new_shape`` (int or ``(W, H)``).

    ``stride`` is the model's largest stride (``auto`` pads to a multiple of it). Exactly upstream's Python
    arithmetic (float64, round-half-even), so the sizes and padding are the ones upstream feeds its model.
    """
    w0, h0 = _positive_size("src_size", src_size)
    new_w, new_h = _positive_size("new_shape", new_shape)
    stride = check_positive_int("stride", stride)
    r = min(new_h / h0, new_w / w0)
    if not scaleup:
        r = min(r, 1.0)
    ratio = (r, r)
    content = (int(round(w0 * r)), int(round(h0 * r)))
    if min(content) < 1:
        raise InvalidImageError(
            f"a {w0}x{h0} (WxH) image scales to {content[0]}x{content[1]} pixels at {new_w}x{new_h}; "
            "crop it to a less elongated region first"
        )
    dw, dh = new_w - content[0], new_h - content[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    elif scale_fill:
        dw, dh = 0, 0
        content = (new_w, new_h)
        ratio = (new_w / w0, new_h / h0)
    half_w, half_h = dw / 2, dh / 2
    top, bottom = int(round(half_h - 0.1)), int(round(half_h + 0.1))
    left, right = int(round(half_w - 0.1)), int(round(half_w + 0.1))
    canvas = (content[0] + left + right, content[1] + top + bottom)
    return LetterboxPlan((w0, h0), content, canvas, ratio, (half_w, half_h), (top, bottom, left, right))


def _colour(color: int | Sequence[int]) -> tuple[int, int, int]:
    values = (color,) * 3 if isinstance(color, (int, np.integer)) else tuple(color)
    if len(values) != 3 or any(isinstance(v, bool) or int(v) != v or not 0 <= v <= 255 for v in values):
        raise InvalidArgumentError(f"color must be an integer 0-255 or three of them (BGR), got {color!r}")
    return int(values[0]), int(values[1]), int(values[2])


def letterbox(image: np.ndarray, plan: LetterboxPlan, color: int | Sequence[int] = 114) -> np.ndarray:
    """Upstream's ``letterbox(...)[0]``: the BGR ``uint8 [Hc, Wc, 3]`` resized and padded image.

    ``color`` is the padding value (one for all channels, or BGR). Bit-identical to upstream's.
    """
    check_image(image)
    if (image.shape[1], image.shape[0]) != plan.src_size:
        raise InvalidImageError(
            f"image is {image.shape[1]}x{image.shape[0]} (WxH) but the plan was made for "
            f"{plan.src_size[0]}x{plan.src_size[1]}; call plan_letterbox with this image's size"
        )
    if plan.content_size != plan.src_size:
        image = cv2.resize(image, plan.content_size, interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = plan.border
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=_colour(color))


def letterbox_input(
    image: np.ndarray,
    plan: LetterboxPlan,
    *,
    color: int | Sequence[int] = 114,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (255.0, 255.0, 255.0),
    channel_order: str = "RGB",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Letterbox a BGR ``uint8 [H, W, 3]`` image and convert it to the float32 ``[3, Hc, Wc]`` network input.

    The defaults are detect.py's: RGB, ``x / 255`` (mean 0, std 255, 0-255 scale, per ``channel_order``
    channel). With ``out`` (float32 ``[3, Hc, Wc]``, e.g. one slot of a batch) the result is written there.
    """
    return normalize_into(letterbox(image, plan, color), mean, std, channel_order, canvas_out(plan.canvas_size, out))
