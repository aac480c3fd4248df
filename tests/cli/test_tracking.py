"""Tracking through ``trackers``' ByteTrack: ids stay stable on shapes moving on known paths; tracker ids in the
one result type (:class:`Detections`) and its JSON rows; other tracker objects are adapted or refused."""

from __future__ import annotations

import numpy as np
import pytest
from _loopback import moving_shapes
from conftest import SHAPES

from nanodet_infer import Detections, Detector, InvalidArgumentError
from nanodet_infer.tracking import ByteTrack, as_tracker

NAMES = ("circle", "rectangle", "triangle")


@pytest.fixture(scope="module", params=["onnxruntime", "openvino"])
def detector(request) -> Detector:
    return Detector(SHAPES / "upstream_export.onnx", backend=request.param, num_threads=1, class_names=NAMES,
                    score_threshold=0.5)


def test_ids_are_stable_on_known_motion(detector) -> None:
    frames = [moving_shapes(i) for i in range(60)]  # no shape wraps around within 60 frames
    results = list(detector.track(frames, workers=2))
    assert len(results) == 60
    ids: dict[str, set[int]] = {"circle": set(), "rectangle": set()}
    for index, result in enumerate(results):
        assert result.tracker_ids is not None and len(result.tracker_ids) == len(result)
        plain = detector(frames[index])  # tracking never changes the detections or their order
        np.testing.assert_array_equal(result.xyxy, plain.xyxy)
        for detection in result:
            if detection.class_name in ids and detection.tracker_id >= 0:
                ids[detection.class_name].add(detection.tracker_id)
    assert all(len(found) == 1 for found in ids.values()), ids
    assert ids["circle"] != ids["rectangle"]
    # confirmed after the tracker's two consecutive frames, then on every frame
    assert all((r.tracker_ids >= 0).sum() >= 2 for r in results[2:])


def test_stream_takes_a_trackers_object(detector) -> None:
    from trackers import ByteTrackTracker

    frames = [moving_shapes(i) for i in range(10)]
    mine = [r.tracker_ids.tolist() for r in detector.stream(frames, tracker=ByteTrackTracker())]
    ours = [r.tracker_ids.tolist() for r in detector.stream(frames, tracker=ByteTrack())]
    assert mine == ours and any(i > -1 for ids in mine for i in ids)


def test_tracker_ids_in_results_and_rows() -> None:
    boxes = Detections([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.4], [0, 1], NAMES, (32, 32), tracker_ids=[7, -1])
    assert [d.tracker_id for d in boxes] == [7, -1]
    assert boxes[[1]].tracker_ids.tolist() == [-1]
    assert [row["tracker_id"] for row in boxes.to_coco(0)] == [7, -1]
    assert boxes.to_dict()["detections"][0]["tracker_id"] == 7
    assert boxes.to_supervision().tracker_id.tolist() == [7, -1]
    untracked = Detections.empty(NAMES, (32, 32))
    assert untracked.tracker_ids is None and "tracker_id" not in str(untracked.to_dict())
    with pytest.raises(InvalidArgumentError, match="one tracker id per detection"):
        Detections([[0, 0, 1, 1]], [0.5], [0], NAMES, (4, 4), tracker_ids=[1, 2])


def test_a_non_tracker_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="tracker must be"):
        as_tracker(object())


def test_detect_track_on_a_video_file(tmp_path) -> None:
    import json

    import cv2

    from nanodet_infer.cli import main

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    for index in range(30):
        writer.write(moving_shapes(index))
    writer.release()
    out = tmp_path / "clip.jsonl"
    argv = ["detect", str(clip), "--model", str(SHAPES / "upstream_export.onnx"), "--class-names", ",".join(NAMES),
            "--score-threshold", "0.5", "--no-progress", "--track", "--jsonl", str(out)]
    assert main(argv) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(30))  # a file: every frame, in order
    tracked = {(row["class_name"], row["tracker_id"]) for line in lines[2:] for row in line["rows"]}
    assert {name for name, _ in tracked} >= {"circle", "rectangle"} and all(track >= 0 for _, track in tracked)
