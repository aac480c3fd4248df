"""Reliability round 3, runtime: decoder bombs refused from the header, streams that deliver what they
finished, results that stay validated through pickle / deepcopy, typed ``to_coco`` errors."""

from __future__ import annotations

import copy
import copyreg
import pickle
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from _images import write_png_declaring
from conftest import SHAPES

from nanodet_infer import Detector
from nanodet_infer.detector import MAX_STREAM_BYTES
from nanodet_infer.errors import ImageReadError, ImageTooLargeError, InvalidArgumentError
from nanodet_infer.image_header import declared_size
from nanodet_infer.images import MAX_IMAGE_PIXELS, load_image
from nanodet_infer.results import Detections

MODEL = SHAPES / "upstream_export.onnx"
NAMES = ("circle", "rectangle", "triangle")
IMAGES = sorted((SHAPES / "images").glob("*.jpg"))[:6]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(MODEL, num_threads=1, score_threshold=0.05, class_names=NAMES)


# ------------------------------------------------------------------------------------------ header sizes
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".pgm", ".sr", ".jp2",
                                    ".hdr", ".pfm"])
def test_declared_size_is_what_opencv_decodes(tmp_path: Path, suffix: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    if suffix == ".pgm":
        image = image[..., 0]
    elif suffix in (".hdr", ".pfm"):
        image = image.astype(np.float32)
    path = tmp_path / f"a{suffix}"
    assert cv2.imwrite(str(path), image)
    decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert declared_size(path) == (decoded.shape[1], decoded.shape[0]) == (53, 37)


def test_declared_size_of_lossless_webp_and_bigger_jpeg_metadata(tmp_path: Path) -> None:
    image = np.zeros((21, 90, 3), np.uint8)
    webp = tmp_path / "l.webp"
    assert cv2.imwrite(str(webp), image, [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert declared_size(webp) == (90, 21)
    jpeg = tmp_path / "exif.jpg"
    ok, data = cv2.imencode(".jpg", image)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 60000) + b"Exif\0\0" + b"\0" * 59994  # a large APP1 before SOF
    jpeg.write_bytes(data.tobytes()[:2] + app1 * 2 + data.tobytes()[2:])
    assert cv2.imread(str(jpeg)).shape[:2] == (21, 90) and declared_size(jpeg) == (90, 21)


def test_png_bomb_is_refused_from_its_header_before_decoding(tmp_path: Path, monkeypatch) -> None:
    bomb = write_png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 1024
    monkeypatch.setattr(cv2, "imread", lambda *a: pytest.fail("a bomb was decoded"))
    with pytest.raises(ImageTooLargeError, match=r"100000x100000.*--max-image-pixels"):
        load_image(bomb)
    big = write_png_declaring(tmp_path / "big.png", 30_000, 30_000)  # 900 MP: 2.7 GB decoded
    with pytest.raises(ImageTooLargeError, match="max_image_pixels"):
        load_image(big)
    assert isinstance(ImageTooLargeError("x"), ImageReadError)


def test_the_budget_is_a_detector_argument(tmp_path: Path) -> None:
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), np.zeros((40, 200, 3), np.uint8))
    small = Detector(MODEL, num_threads=1, class_names=NAMES, max_image_pixels=7999)
    with pytest.raises(ImageTooLargeError, match="200x40"):
        small(image)
    assert small(np.zeros((40, 200, 3), np.uint8)).image_size == (200, 40)  # arrays are not limited
    assert pickle.loads(pickle.dumps(small))._arguments.max_image_pixels == 7999
    assert Detector(MODEL, num_threads=1, class_names=NAMES, max_image_pixels=8000)(image).image_size == (200, 40)
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(InvalidArgumentError, match="max_image_pixels"):
            Detector(MODEL, class_names=NAMES, max_image_pixels=bad)


def test_opencv_own_limit_is_a_typed_error(tmp_path: Path) -> None:
    # above OpenCV's 2**30-pixel cap: with the budget raised, cv2.imread itself raises cv2.error
    bomb = write_png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageReadError, match="OpenCV"):
        load_image(bomb, max_pixels=10**11)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDX", b"\xff\xd8\xff\xda\0\2", b"BM\0\0",
                                     b"II*\0\xff\xff\xff\x7f", b"RIFF\0\0\0\0WEBPVP9 "])
def test_malformed_headers_are_read_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.img"
    path.write_bytes(content)
    with pytest.raises(ImageReadError):
        load_image(path)


def test_default_budget_admits_real_photos() -> None:
    assert MAX_IMAGE_PIXELS >= 8000 * 8000
    assert load_image(IMAGES[0]).shape[2] == 3


# ------------------------------------------------------------------------------------------ streams
def test_stream_yields_every_finished_result_before_the_source_error(detector: Detector) -> None:
    def source():
        yield from IMAGES[:5]
        raise RuntimeError("camera unplugged")

    before = threading.active_count()
    got = []
    with pytest.raises(RuntimeError, match="camera unplugged"):
        for result in detector.stream(source(), workers=2):
            got.append(result)
    expected = [detector(p) for p in IMAGES[:5]]
    assert len(got) == 5
    assert all(np.array_equal(a.xyxy, b.xyxy) for a, b in zip(got, expected, strict=True))
    assert threading.active_count() == before  # no worker thread outlives the call


def test_an_image_error_is_raised_in_its_turn_not_after_later_results(detector: Detector, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    got = []
    with pytest.raises(ImageReadError):
        for result in detector.stream([IMAGES[0], bad, IMAGES[1], IMAGES[2], IMAGES[3]], workers=2):
            got.append(result)
    assert len(got) == 1  # the image before it, and none of the ones after


def test_stream_read_ahead_is_bounded_by_bytes(detector: Detector) -> None:
    taken = 0
    big = np.zeros((4000, 8000, 3), np.uint8)  # 96 MB each

    def source():
        nonlocal taken
        for _ in range(12):
            taken += 1
            yield big

    stream = detector.stream(source(), workers=8)  # 2 * workers = 16 images by count alone
    next(stream)
    assert taken * big.nbytes <= MAX_STREAM_BYTES + 2 * big.nbytes
    stream.close()


# ------------------------------------------------------------------------------------------ results
def _dets() -> Detections:
    return Detections([[1, 2, 3, 4], [0, 0, 1, 1]], [0.9, 0.5], [2, 0], NAMES, (10, 10))


@pytest.mark.parametrize("copier", [lambda d: pickle.loads(pickle.dumps(d)), copy.deepcopy, copy.copy])
def test_arrays_stay_read_only_after_pickle_and_copy(copier) -> None:
    copied = copier(_dets())
    for array in (copied.xyxy, copied.scores, copied.class_ids):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 0
    assert copied.labels == ["triangle", "circle"]


class _FieldsAsState:
    """Pickles as a Detections restored from a state dict (how a hand-made or older pickle looks)."""

    def __init__(self, **state) -> None:
        self.state = state

    def __reduce__(self):
        return (copyreg._reconstructor, (Detections, object, None), self.state)


def test_tampered_pickle_with_a_class_beyond_the_list_is_refused_on_load() -> None:
    data = pickle.dumps(_dets(), protocol=2)  # unframed: bytes can be cut out
    tampered = data.replace(b"X\x08\x00\x00\x00triangleq,\x87", b"\x86")  # drop the third class name
    assert tampered != data
    with pytest.raises(InvalidArgumentError, match="class ids"):
        pickle.loads(tampered)
    state = {"xyxy": np.zeros((1, 4)), "scores": [0.5], "class_ids": [7], "class_names": NAMES,
             "image_size": (9, 9), "timings": None}
    with pytest.raises(InvalidArgumentError, match="class ids"):
        pickle.loads(pickle.dumps(_FieldsAsState(**state)))
    restored = pickle.loads(pickle.dumps(_FieldsAsState(**{**state, "class_ids": [1]})))
    assert restored.labels == ["rectangle"] and not restored.xyxy.flags.writeable


@pytest.mark.parametrize("bad", ["abc", b"abc", {0: 1, 1: 2, 2: 3}, [1, 2], [1.5, 2, 3], [True, 2, 3], 7])
def test_to_coco_category_ids_are_checked(bad) -> None:
    with pytest.raises(InvalidArgumentError, match="category_ids"):
        _dets().to_coco(1, category_ids=bad)
    assert [r["category_id"] for r in _dets().to_coco(1, np.array([5, 6, 7]))] == [7, 5]


# ------------------------------------------------------------------------------------------ EXIF orientation
def _jpeg_with_orientation(path: Path, image: np.ndarray, orientation: int) -> Path:
    """A JPEG of ``image`` carrying an EXIF APP1 segment whose Orientation tag is ``orientation``."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd
    ok, data = cv2.imencode(".jpg", image)
    path.write_bytes(data.tobytes()[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(exif)) + exif + data.tobytes()[2:])
    return path


def test_exif_orientation_is_applied_as_the_references_decode(tmp_path: Path, detector: Detector) -> None:
    # NanoDet's demo, YOLOv7's LoadImages and the torchvision fixtures' generator all decode with cv2.imread, which
    # applies the EXIF orientation; every family here decodes through load_image, i.e. cv2.imread
    image = cv2.imread(str(IMAGES[0]))
    rotated = _jpeg_with_orientation(tmp_path / "rotated.jpg", image[:, :200], 6)  # 6: rotate 90 degrees clockwise
    height, width = image[:, :200].shape[:2]
    loaded = load_image(rotated)
    assert loaded.shape[:2] == (width, height)
    assert np.array_equal(loaded, cv2.imread(str(rotated)))
    assert declared_size(rotated) == (200, height)  # the header's size: the same pixel count
    assert detector(rotated).image_size == (height, width)  # boxes in the rotated image's pixels
