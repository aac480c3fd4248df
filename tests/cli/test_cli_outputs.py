"""``nanodet-infer``: outputs never replace inputs or unknown files, are checked before any work, written
atomically, through links and into pipes; SIGTERM cleans up like Ctrl-C; untrusted text is made safe."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import cv2
import pytest
from _slow_cli import start_stalled_detect
from conftest import SHAPES

from nanodet_infer.cli import main
from nanodet_infer.paths import temporary_name, write_json
from nanodet_infer.safetext import safe_text

MODEL = str(SHAPES / "upstream_export.onnx")
IMAGES = SHAPES / "images"
FIRST = IMAGES / "val_00000.jpg"
FOREIGN = ["--model", MODEL, "--backend", "onnxruntime", "--class-names", "circle,rectangle,triangle"]


def _one_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("nanodet-infer: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def _photos(folder: Path, count: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(IMAGES.glob("*.jpg"))[:count]:
        (folder / source.name).write_bytes(source.read_bytes())
        paths.append(folder / source.name)
    return paths


def _contents(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in paths]


def _video(path: Path, frames: int = 4) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    sources = sorted(IMAGES.glob("*.jpg"))
    for index in range(frames):
        writer.write(cv2.resize(cv2.imread(str(sources[index % len(sources)])), (320, 240)))
    writer.release()
    return path


# ---------------------------------------------------------------------------------------------- inputs are safe
def test_save_dir_that_is_the_input_folder_is_refused(tmp_path, capsys) -> None:
    photos = _photos(tmp_path / "photos")
    before = _contents(photos)
    for extra in ([], ["--overwrite"]):
        argv = ["detect", str(tmp_path / "photos"), *FOREIGN, "--save-dir", str(tmp_path / "photos" / "."), *extra]
        assert main(argv) == 2
        _one_error(capsys, "--save-dir", "is the input folder")
    assert _contents(photos) == before and sorted(p.name for p in (tmp_path / "photos").iterdir()) == [
        p.name for p in photos]


def test_save_dir_holding_an_input_file_is_refused_even_with_overwrite(tmp_path, capsys) -> None:
    (photo,) = _photos(tmp_path, 1)
    before = photo.read_bytes()
    assert main(["detect", str(photo), *FOREIGN, "--save-dir", str(tmp_path), "--overwrite"]) == 2
    _one_error(capsys, "is the input", photo.name)
    assert photo.read_bytes() == before


def test_save_dir_below_an_input_folder_is_fine(tmp_path) -> None:
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "photos" / "annotated"
    assert main(["detect", str(tmp_path / "photos"), *FOREIGN, "--save-dir", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in photos]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_json_naming_an_input_image_is_refused(tmp_path, capsys, overwrite) -> None:
    photos = _photos(tmp_path / "photos")
    before = _contents(photos)
    link = tmp_path / "link.jpg"
    link.symlink_to(photos[1])
    for target in (photos[1], link, tmp_path / "photos" / ".." / "photos" / photos[1].name):
        assert main(["detect", str(tmp_path / "photos"), *FOREIGN, "--json", str(target), *overwrite]) == 2
        _one_error(capsys, "--json", "is the input")
    assert _contents(photos) == before


def test_json_naming_the_model_or_class_names_file_is_refused(tmp_path, capsys) -> None:
    names = tmp_path / "names.txt"
    names.write_text("circle\nrectangle\ntriangle\n")
    argv = ["detect", str(FIRST), "--model", MODEL, "--class-names", str(names), "--json", str(names), "--overwrite"]
    assert main(argv) == 2
    _one_error(capsys, "is the input")
    assert names.read_text() == "circle\nrectangle\ntriangle\n"


def test_eval_json_equal_to_ann_is_refused(tmp_path, capsys) -> None:
    pytest.importorskip("pycocotools")
    ann = tmp_path / "ann.json"
    ann.write_bytes((SHAPES / "annotations.json").read_bytes())
    argv = ["eval", *FOREIGN, "--ann", str(ann), "--images", str(IMAGES), "--json", str(ann), "--overwrite"]
    assert main(argv) == 2
    _one_error(capsys, "--json", "is the input")
    assert ann.read_bytes() == (SHAPES / "annotations.json").read_bytes()


def test_existing_outputs_need_overwrite_and_are_checked_before_the_model_loads(tmp_path, capsys) -> None:
    out_json = tmp_path / "rows.json"
    out_json.write_text("mine")
    argv = ["detect", str(FIRST), "--model", str(tmp_path / "missing.onnx"), "--json", str(out_json)]
    assert main(argv) == 2
    _one_error(capsys, "already exists", "--overwrite")  # not "missing.onnx": nothing was loaded yet
    assert out_json.read_text() == "mine"
    save = tmp_path / "out"
    save.mkdir()
    (save / FIRST.name).write_text("mine too")
    assert main(["detect", str(FIRST), *FOREIGN, "--save-dir", str(save)]) == 2
    _one_error(capsys, "--save-dir", "already exists")
    assert (save / FIRST.name).read_text() == "mine too"
    assert main(["detect", str(FIRST), *FOREIGN, "--save-dir", str(save), "--json", str(out_json), "--overwrite",
                 "--no-progress"]) == 0
    assert cv2.imread(str(save / FIRST.name)) is not None and json.loads(out_json.read_text())


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: tmp / "missing" / "rows.json", "does not exist"),
        (lambda tmp: tmp / "file.txt" / "rows.json", "does not exist"),
    ],
    ids=["a directory", "missing folder", "below a file"],
)
def test_bad_json_paths_fail_before_any_work(tmp_path, capsys, build, needle) -> None:
    (tmp_path / "file.txt").write_text("x")
    argv = ["detect", str(FIRST), "--model", str(tmp_path / "missing.onnx"), "--json", str(build(tmp_path))]
    assert main(argv) == 2
    _one_error(capsys, "--json", needle)


def test_json_inside_the_save_dir_to_be_created(tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["detect", str(FIRST), *FOREIGN, "--save-dir", str(out), "--json", str(out / "rows.json"),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["rows.json", FIRST.name]


def test_save_dir_that_is_a_file_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "file.txt").write_text("x")
    assert main(["detect", str(FIRST), *FOREIGN, "--save-dir", str(tmp_path / "file.txt")]) == 2
    _one_error(capsys, "is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_fails_before_any_work(tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = ["detect", str(FIRST), "--model", str(tmp_path / "missing.onnx"), "--json", str(locked / "r.json")]
        assert main(argv) == 2
        _one_error(capsys, "cannot write in")
    finally:
        locked.chmod(0o755)


def test_same_names_from_different_folders_are_kept_apart_and_traceable(tmp_path) -> None:
    day, night = _photos(tmp_path / "day", 1), _photos(tmp_path / "night", 1)
    night[0].write_bytes((IMAGES / "val_00001.jpg").read_bytes())  # same name, another picture
    out, out_json = tmp_path / "out", tmp_path / "rows.json"
    argv = ["detect", str(day[0]), str(tmp_path / "night"), *FOREIGN, "--save-dir", str(out), "--json", str(out_json),
            "--no-progress"]
    assert main(argv) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg")) == ["day/val_00000.jpg", "night/val_00000.jpg"]
    assert {row["path"] for row in json.loads(out_json.read_text())} == {str(day[0]), str(night[0])}


def test_the_same_file_given_twice_is_processed_once(tmp_path, capsys) -> None:
    link = tmp_path / "alias.jpg"
    link.symlink_to(FIRST)
    assert main(["detect", str(FIRST), str(link), str(IMAGES / "." / FIRST.name), *FOREIGN, "--no-progress"]) == 0
    assert "1 images/frames" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- how outputs are written
def test_json_symlink_is_written_through(tmp_path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert main(["detect", str(FIRST), *FOREIGN, "--json", str(link), "--overwrite", "--no-progress"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_json_into_a_fifo_is_streamed(tmp_path) -> None:
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    assert main(["detect", str(FIRST), *FOREIGN, "--json", str(fifo), "--no-progress"]) == 0
    reader.join(timeout=60)
    assert len(json.loads(received[0])) == 7  # upstream's 7 detections of this image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.fifo"]


def test_a_255_byte_file_name_is_saved(tmp_path) -> None:
    name = "n" * 251 + ".jpg"  # NAME_MAX: a temporary name built from it would overflow
    photo = tmp_path / "in" / name
    photo.parent.mkdir()
    photo.write_bytes(FIRST.read_bytes())
    out = tmp_path / "out"
    assert main(["detect", str(photo), *FOREIGN, "--save-dir", str(out), "--json", str(tmp_path / ("j" * 255)),
                 "--no-progress"]) == 0
    assert [p.name for p in out.iterdir()] == [name]
    assert json.loads((tmp_path / ("j" * 255)).read_text())


def test_temporary_names_are_short_hidden_and_unique_per_process() -> None:
    names = {temporary_name(".mp4") for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith(f".nd-{os.getpid():x}-") and n.endswith(".mp4") and len(n) < 40 for n in names)


def test_write_json_leaves_the_old_file_on_failure(tmp_path) -> None:
    target = tmp_path / "out.json"
    write_json(target, [1])
    with pytest.raises(TypeError):
        write_json(target, [object()])
    assert json.loads(target.read_text()) == [1] and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_no_progress_video_reports_its_real_frame_count(tmp_path, capsys) -> None:
    video = _video(tmp_path / "clip.avi", frames=4)
    assert main(["detect", str(video), *FOREIGN, "--no-progress"]) == 0
    assert f"{video}: 4 frames;" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize(("signum", "status", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                        (signal.SIGINT, 130, "interrupted")])
def test_sigterm_cleans_up_like_ctrl_c(tmp_path, signum, status, word) -> None:
    video = _video(tmp_path / "clip.avi", frames=40)
    out, out_json, marker = tmp_path / "out", tmp_path / "rows.json", tmp_path / "started"
    argv = ["detect", str(video), *FOREIGN, "--save-dir", str(out), "--json", str(out_json), "--no-progress"]
    process = start_stalled_detect(marker, 3, argv)  # the 4th result waits
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status
    assert err.strip() == f"nanodet-infer: {word}"
    assert list(out.iterdir()) == []  # no partial video
    rows = json.loads(out_json.read_text())  # the rows of the 3 frames done
    assert rows and {row["frame"] for row in rows} <= {0, 1, 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "out", "rows.json", "started"]


# ---------------------------------------------------------------------------------------------- untrusted text
def test_safe_text_escapes_controls_and_keeps_unicode() -> None:
    assert safe_text("ok 圆形 ▭ café 😀") == "ok 圆形 ▭ café 😀"
    assert safe_text("a\x1b[2J\rb\nc\td\x7f\x9b") == "a\\x1b[2J\\x0db\\x0ac\\x09d\\x7f\\x9b"
    assert safe_text("evil\u202etxt.exe\u2028") == "evil\\u202etxt.exe\\u2028"
    assert safe_text(Path("x")) == "x"
    assert safe_text(os.fsdecode(b"caf\xe9.jpg")) == "caf\\udce9.jpg"  # a Latin-1 file name: printable


def test_hostile_class_names_and_file_names_are_printed_safely(tmp_path, capsys) -> None:
    names = tmp_path / "names.txt"
    names.write_text('["\\u001b[2Jcircle", "rect\\nnanodet-infer: error: fake", "tri\\u001b]0;title\\u0007"]')
    photo = tmp_path / "a\x1b[31m\nb.jpg"
    photo.write_bytes(FIRST.read_bytes())
    out = tmp_path / "out"
    assert main(["detect", str(photo), "--model", MODEL, "--class-names", str(names), "--save-dir", str(out),
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err
    first, *_ = captured.out.splitlines()
    assert first.startswith(f"{tmp_path}/a\\x1b[31m\\x0ab.jpg: 7 detections (4 \\x1b[2Jcircle")
    assert "rect\\x0ananodet-infer: error: fake" in first
    assert [p.name for p in out.iterdir()] == [photo.name]  # the file itself keeps its real name


def test_unwritable_folder_fails_before_any_work(tmp_path, capsys, monkeypatch) -> None:
    """A read-only mount (EROFS) seen by the probe: the same path as a folder without write permission."""
    import errno

    from nanodet_infer import paths as outputs

    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(outputs.os, "open", read_only)
    argv = ["detect", str(FIRST), "--model", str(tmp_path / "missing.onnx"), "--json", str(tmp_path / "r.json")]
    assert main(argv) == 2
    _one_error(capsys, "cannot write in", "Read-only file system")
