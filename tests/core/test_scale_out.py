"""Ray Data batch detection (:mod:`nanodet_infer.scale_out`) on a local 2-CPU Ray.

Every test runs under a hard time limit (a pipeline that deadlocks fails instead of hanging CI). The
results are compared with the local :class:`Detector` on the same images: equal rows, both backends.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from nanodet_infer import Detector
from nanodet_infer.errors import InvalidArgumentError, NanoDetError
from nanodet_infer.scale_out import FAULT_MARKER_ENV, detect_with_ray, image_paths, plan_actor_cpus

ray = pytest.importorskip("ray")

DATA = Path(__file__).parents[1] / "data" / "shapes-m-256"
MODEL = DATA / "upstream_export.onnx"
NAMES = ["circle", "rectangle", "triangle"]
TIME_LIMIT_S = 120


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fail (not hang) when one test takes longer than TIME_LIMIT_S."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"Ray test exceeded {TIME_LIMIT_S} s (pipeline stalled?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray with 2 CPUs for this module; yields the fault-injection marker path its workers see."""
    marker = tmp_path_factory.mktemp("fault") / "killed-once"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {FAULT_MARKER_ENV: str(marker)}},
    )
    marker.touch()  # armed only by the fault test (it removes the file)
    try:
        yield marker
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 fixture images plus one unreadable file with an image suffix."""
    root = tmp_path_factory.mktemp("images")
    for path in sorted((DATA / "images").glob("*.jpg"))[:12]:
        shutil.copy(path, root / path.name)
    (root / "zz_broken.jpg").write_bytes(b"not a jpeg")
    return root


def local_rows(paths: list[str], backend: str) -> list[dict]:
    """What ``nanodet-infer detect --json`` writes for these images (readable ones), computed in-process."""
    detector = Detector(MODEL, class_names=NAMES, backend=backend, num_threads=1)
    rows: list[dict] = []
    readable = [path for path in paths if cv2.imread(path) is not None]
    for image_id, path in enumerate(readable):  # the local command counts readable images only
        found = detector(path)
        rows += [{**row, "file_name": Path(path).name, "path": path} for row in found.to_coco(image_id)]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_same_rows_as_local_detection(local_ray: Path, folder: Path, backend: str) -> None:
    run = detect_with_ray([folder], MODEL, actors=2, threads=1, batch_size=3, class_names=NAMES, backend=backend,
                          progress=False)
    paths = image_paths([folder])
    assert run.images == len(paths) - 1 == 12
    assert run.rows == local_rows(paths, backend)
    assert len(run.rows) > 20
    assert [Path(p).name for p, _ in run.errors] == ["zz_broken.jpg"]


@pytest.mark.slow
def test_dead_actor_is_restarted_and_no_image_is_lost_or_duplicated(local_ray: Path, folder: Path) -> None:
    local_ray.unlink()  # arm: the first batch of this run kills its actor process once
    run = detect_with_ray([folder], MODEL, actors=1, threads=1, batch_size=2, class_names=NAMES,
                          progress=False)
    assert local_ray.exists(), "the fault was not injected"
    paths = image_paths([folder])
    assert run.images == len(paths) - 1
    assert run.rows == local_rows(paths, "auto")
    ids = [row["image_id"] for row in run.rows]
    assert ids == sorted(ids)


@pytest.mark.slow
def test_parquet_output_keyed_by_path(local_ray: Path, folder: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "parquet"
    run = detect_with_ray([folder], MODEL, class_names=NAMES, parquet_dir=out, progress=False)
    table = pq.read_table(out).to_pylist()
    assert sorted(row["path"] for row in table) == image_paths([folder])
    assert sum(len(json.loads(row["rows"])) for row in table) == len(run.rows)


def test_model_that_does_not_load_fails_before_ray_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(NanoDetError):
        detect_with_ray([DATA / "images"], bad)


def test_videos_are_refused(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    with pytest.raises(InvalidArgumentError, match="videos are not supported"):
        image_paths([video])


@pytest.mark.parametrize(
    ("cluster", "actors", "threads", "expected"),
    [(2, 2, 1, 0.75), (2, 1, 1, 1.0), (2, 1, 4, 1.5), (64, 4, 8, 8.0), (16, 16, 1, 0.968)],
)
def test_actor_cpus_leave_room_for_read_tasks(cluster: float, actors: int, threads: int, expected: float) -> None:
    share = plan_actor_cpus(cluster, actors, threads)
    assert share == expected
    assert share * actors <= cluster - 0.5


def test_too_many_actors_for_the_cluster_is_a_typed_error() -> None:
    with pytest.raises(InvalidArgumentError, match="fewer --actors"):
        plan_actor_cpus(2, 100, 1)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_cli_ray_json_equals_local_json(local_ray: Path, folder: Path, tmp_path: Path, backend: str) -> None:
    from nanodet_infer.cli import main

    common = [str(folder), "--model", str(MODEL), "--class-names", ",".join(NAMES), "--backend", backend,
              "--threads", "1", "--no-progress"]
    assert main(["detect", *common, "--json", str(tmp_path / "local.json")]) == 2  # the broken image
    assert main(["detect", *common, "--ray", "--actors", "2", "--json", str(tmp_path / "ray.json")]) == 2
    local = json.loads((tmp_path / "local.json").read_text())
    assert len(local) > 20
    assert json.loads((tmp_path / "ray.json").read_text()) == local


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--save-dir", "out"], "--save-dir is not supported with --ray"),
     (["--workers", "2"], "--workers is not supported with --ray"),
     (["VIDEO"], "videos are not supported with --ray")],
)
def test_cli_ray_refuses_what_it_cannot_do_before_any_work(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    extra: list[str], needle: str,
) -> None:
    from nanodet_infer.cli import main

    monkeypatch.setattr("nanodet_infer.cli.arguments.make_detector", lambda *a, **k: pytest.fail("model loaded"))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    paths = [str(folder), *([str(video)] if extra == ["VIDEO"] else [])]
    options = [] if extra == ["VIDEO"] else [str(tmp_path / e) if e == "out" else e for e in extra]
    status = main(["detect", *paths, "--model", str(MODEL), "--class-names", ",".join(NAMES), "--ray",
                   "--json", str(tmp_path / "rows.json"), "--no-progress", *options])
    assert status == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "rows.json").exists()
