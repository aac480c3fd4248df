"""``nanodet-export`` command line: summary, exit codes, one-line errors, nothing left behind.

Runs on seeded weights only (no shared fixtures): a 3-class NanoDet-Plus-m built from the shapes
config and saved as an upstream-style ``.pth``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from _tiny_models import fake_detector
from conftest import PLUS320, SHAPES
from nanodet_export import parity
from nanodet_export.cli import main
from nanodet_export.nanodet_plus.graph import check_output_layout
from nanodet_models import build_model, load_config
from nanodet_models.nanodet_plus.config import config_from_dict

from nanodet_infer.errors import ExportError, InvalidArgumentError

SHAPES_YAML = SHAPES / "config.yml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def seeded_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "seeded.pth"
    torch.save({"state_dict": build_model(load_config(SHAPES_YAML)).state_dict()}, path)
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory for outputs (so "nothing left behind" can be checked by listing it)."""
    out = tmp_path / "out"
    out.mkdir()
    return out


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nanodet-export: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_success_prints_summary(capsys, seeded_pth, workdir):
    code, out, err = _run(capsys, "--ckpt", seeded_pth, "--out", workdir / "m.onnx", "--input-size", "256,192")
    assert (code, err) == (0, "")
    assert "ShuffleNetV2 1.0x + GhostPAN(96) + NanoDetPlusHead, 3 classes" in out
    assert "images [1, 3, 192, 256]" in out and "scores [1, 1020, 3], boxes [1, 1020, 32]" in out
    assert "max |Δ| scores" in out and "pth checkpoint" in out and "MB" in out
    assert sorted(p.name for p in workdir.iterdir()) == ["m.onnx"]


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    return path


def _truncated(tmp_path: Path, seeded_pth: Path) -> Path:
    path = tmp_path / "truncated.pth"
    path.write_bytes(seeded_pth.read_bytes()[: seeded_pth.stat().st_size // 2])
    return path


def _foreign(tmp_path: Path) -> Path:
    """A plain classifier's state dict: a checkpoint, but of another architecture."""
    path = tmp_path / "resnet.pth"
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def _reg_max_10_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "reg_max_10.yml"
    path.write_text(SHAPES_YAML.read_text().replace("reg_max: 7", "reg_max: 10"))
    return path


def _names(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "names.json"
    path.write_text(json.dumps(names))
    return path


BAD_INPUTS = {
    "missing file": (lambda tmp, ckpt: ["--ckpt", tmp / "nope.pth"], "does not exist"),
    "not a checkpoint": (lambda tmp, ckpt: ["--ckpt", _garbage(tmp)], "notes.pth"),
    "truncated": (lambda tmp, ckpt: ["--ckpt", _truncated(tmp, ckpt)], "truncated.pth"),
    "other architecture": (lambda tmp, ckpt: ["--ckpt", _foreign(tmp)], "NanoDet-Plus"),
    "num_classes disagrees": (
        lambda tmp, ckpt: ["--ckpt", ckpt, "--config", PLUS320 / "config.yml"],
        "num_classes=80",
    ),
    "reg_max disagrees": (lambda tmp, ckpt: ["--ckpt", ckpt, "--config", _reg_max_10_yaml(tmp)], "reg_max=10"),
    "preset disagrees": (lambda tmp, ckpt: ["--ckpt", ckpt, "--preset", "nanodet-plus-m_320"], "num_classes"),
    "class-name count": (
        lambda tmp, ckpt: ["--ckpt", ckpt, "--class-names", _names(tmp, ["a", "b"])],
        "2 class names",
    ),
    "input size not multiple of 32": (lambda tmp, ckpt: ["--ckpt", ckpt, "--input-size", "300,320"], "multiple of 32"),
    "input size not W,H": (lambda tmp, ckpt: ["--ckpt", ckpt, "--input-size", "320"], "W,H"),
    "unknown preset": (lambda tmp, ckpt: ["--ckpt", ckpt, "--preset", "yolo"], "unknown preset"),
    "extension disagrees with format": (
        lambda tmp, ckpt: ["--ckpt", ckpt, "--format", "openvino"],
        "does not end in .xml",
    ),
    "fp16 with onnx": (lambda tmp, ckpt: ["--ckpt", ckpt, "--fp16"], "--fp16"),
    "opset out of range": (lambda tmp, ckpt: ["--ckpt", ckpt, "--opset", "9"], "--opset 9"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_exit_2_one_line_no_output(case, capsys, seeded_pth, tmp_path, workdir):
    build, needle = BAD_INPUTS[case]
    code, out, err = _run(capsys, *build(tmp_path, seeded_pth), "--out", workdir / "model.onnx")
    assert code == 2
    _assert_one_line_error(err, needle)
    assert out == ""
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [["--preset", "nanodet-plus-m_320", "--config", "x.yml"], ["--opset", "new"], ["--format", "tflite"], []],
    ids=["config and preset", "opset not int", "unknown format", "no ckpt"],
)
def test_usage_errors_are_one_line_exit_2(argv, capsys, seeded_pth, workdir):
    ckpt = [] if not argv else ["--ckpt", seeded_pth]
    code, _, err = _run(capsys, *ckpt, *argv, "--out", workdir / "m.onnx")
    assert code == 2
    _assert_one_line_error(err, "see --help")
    assert list(workdir.iterdir()) == []


def test_class_names_file_one_per_line(capsys, seeded_pth, tmp_path, workdir):
    names = tmp_path / "names.txt"
    names.write_text("disc\n\nbox\ntri\n")
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--out", workdir / "m.onnx", "--class-names", names)
    assert code == 0, err
    import onnx

    props = {p.key: p.value for p in onnx.load(str(workdir / "m.onnx")).metadata_props}
    assert json.loads(props["nanodet.class_names"]) == ["disc", "box", "tri"]


class _CreatesMarker:
    """Unpickling this runs ``open(marker, "w")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_trust(capsys, tmp_path, workdir):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}, "payload": _CreatesMarker(marker)}, evil)
    assert not marker.exists()
    code, _, err = _run(capsys, "--ckpt", evil, "--out", workdir / "model.onnx")
    assert code == 2
    _assert_one_line_error(err, "--trust-checkpoint")
    assert not marker.exists()
    assert list(workdir.iterdir()) == []


def test_verbose_error_has_traceback(capsys, tmp_path, workdir):
    code, _, err = _run(capsys, "--ckpt", tmp_path / "nope.pth", "--out", workdir / "m.onnx", "--verbose")
    assert code == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("nanodet-export: error: ")


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_parity_failure_is_exit_1_and_writes_nothing(fmt, capsys, monkeypatch, seeded_pth, workdir):
    existing = workdir / ("m.onnx" if fmt == "onnx" else "m.xml")
    existing.write_text("previous model")  # must survive a failed export untouched
    monkeypatch.setattr(parity, "compare", _perturbed(parity.compare))
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--out", existing, "--format", fmt, "--overwrite")
    assert code == 1
    _assert_one_line_error(err, "parity check failed")
    assert sorted(p.name for p in workdir.iterdir()) == [existing.name]
    assert existing.read_text() == "previous model"


def _perturbed(compare):
    """``parity.compare`` whose candidate is off by 1e-3, as a broken conversion would be."""

    def wrapped(reference, candidate, samples):
        return compare(reference, lambda x: {k: v + 1e-3 for k, v in candidate(x).items()}, samples)

    return wrapped


def test_output_directory_must_exist(capsys, seeded_pth, tmp_path):
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--out", tmp_path / "missing" / "m.onnx")
    assert code == 2
    _assert_one_line_error(err, "does not exist")
    assert not (tmp_path / "missing").exists()


# ---------------------------------------------------------------- outputs: never an input, checked before any work
def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda ckpt, d: ["--ckpt", _copy(ckpt, d / "m.onnx"), "--out", d / "m.onnx"], "is the input"),
        (lambda ckpt, d: ["--ckpt", _copy(ckpt, d / "m.bin"), "--out", d / "m.xml", "--format", "openvino"],
         "is the input"),
        (lambda ckpt, d: ["--ckpt", ckpt, "--config", _copy(SHAPES_YAML, d / "m.onnx"), "--out", d / "m.onnx"],
         "is the input"),
        (lambda ckpt, d: ["--ckpt", ckpt, "--class-names", _copy(SHAPES_YAML, d / "m.onnx"), "--out", d / "m.onnx"],
         "is the input"),
        (lambda ckpt, d: ["--ckpt", ckpt, "--out", _copy(ckpt, d / "m.onnx")], "already exists"),
        (lambda ckpt, d: ["--ckpt", ckpt, "--out", _copy(ckpt, d / "m.bin").with_suffix(".xml"), "--format",
                          "openvino"], "already exists"),
        (lambda ckpt, d: ["--ckpt", ckpt, "--out", d], "is a directory"),
        (lambda ckpt, d: ["--ckpt", ckpt, "--out", "/dev/null"], "pipe or device"),
    ],
    ids=["out is ckpt", "IR .bin is ckpt", "out is config", "out is class names", "out exists", "IR .bin exists",
         "out is a directory", "out is a device"],
)
def test_outputs_never_replace_inputs_or_unknown_files(build, needle, capsys, seeded_pth, workdir):
    argv = build(seeded_pth, workdir)
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    for extra in ([], ["--overwrite"]) if needle == "is the input" else ([],):
        code, out, err = _run(capsys, *argv, *extra)
        assert (code, out) == (2, "")
        _assert_one_line_error(err, needle)
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_python_api_never_writes_over_its_checkpoint(seeded_pth, workdir, monkeypatch, fmt):
    from nanodet_export import export_checkpoint

    monkeypatch.setattr("nanodet_export.families.resolve", lambda *a: pytest.fail("the checkpoint was read"))
    ckpt = _copy(seeded_pth, workdir / ("m.bin" if fmt == "openvino" else "m.onnx"))
    before = ckpt.read_bytes()
    with pytest.raises(InvalidArgumentError, match="is one of the export's inputs"):
        export_checkpoint(ckpt, ckpt.with_suffix(".xml" if fmt == "openvino" else ".onnx"), fmt=fmt)
    assert ckpt.read_bytes() == before


def test_unwritable_out_folder_is_one_line_before_any_work(capsys, monkeypatch, seeded_pth, workdir):
    import errno

    from nanodet_infer import paths as outputs

    def refuse(path, flags, *args):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)

    monkeypatch.setattr(outputs.os, "open", refuse)
    monkeypatch.setattr("nanodet_export.cli.export_checkpoint", lambda *a, **k: pytest.fail("export started"))
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--out", workdir / "m.onnx")
    assert code == 2
    _assert_one_line_error(err, "cannot write in", "Permission denied")
    assert "internal error" not in err


@pytest.mark.slow
def test_long_output_name_and_symlink_are_written(capsys, seeded_pth, workdir, tmp_path):
    target = tmp_path / "real.onnx"
    target.write_text("old")
    link = workdir / ("n" * 250 + ".onnx")  # 255 bytes: a temporary name built from it would overflow
    link.symlink_to(target)
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--out", link, "--input-size", "64,64", "--no-simplify",
                        "--overwrite")
    assert (code, err) == (0, "")
    assert link.is_symlink() and onnx.load(str(target)).graph.output
    assert [p.name for p in workdir.iterdir()] == [link.name]


_SLOW_EXPORT = """
import sys, time
from pathlib import Path
from nanodet_export import parity
from nanodet_export.cli import main
marker = Path(sys.argv[1])
def slow(*args, **kwargs):
    marker.touch()
    time.sleep(60)
parity.compare = slow
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                        (signal.SIGINT, 130, "interrupted")])
def test_signal_during_export_leaves_nothing_and_no_traceback(signum, status, word, seeded_pth, tmp_path, workdir):
    marker = tmp_path / "parity-started"
    argv = [str(marker), "--ckpt", str(seeded_pth), "--out", str(workdir / "m.xml"), "--format", "openvino",
            "--input-size", "64,64", "--no-simplify"]
    process = subprocess.Popen([sys.executable, "-c", _SLOW_EXPORT, *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), process.communicate(timeout=60)
    assert len(list(workdir.iterdir())) == 2  # the staged .xml and .bin exist now
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status
    assert (out, err.strip()) == ("", f"nanodet-export: {word}; nothing was written")
    assert list(workdir.iterdir()) == []


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "nanodet-export").is_file()


# ---------------------------------------------------------------- what an inferred architecture assumes
def _seeded_with_activation(tmp_path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A seeded shapes-model ``.pth`` trained (so to speak) with ``name`` everywhere, and its deploy model."""
    data = yaml.safe_load(SHAPES_YAML.read_text())
    for part in ("backbone", "fpn", "head", "aux_head"):
        data["model"]["arch"][part]["activation"] = name
    torch.manual_seed(1)
    model = build_model(config_from_dict(data))
    with torch.no_grad():  # weights large enough for the activation to matter (fresh heads are near zero)
        for param in model.parameters():
            param.uniform_(0.02, 0.3) if param.numel() == 1 else param.normal_(0.0, 0.2)
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path, model.deploy()


def _onnx_vs_torch(path: Path, deploy: torch.nn.Module) -> float:
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256), dtype=np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["boxes"], {"images": x})
    with torch.no_grad():
        want = deploy(torch.from_numpy(x))[1].numpy()
    return float(np.abs(got - want).max())


def _architecture(path: Path) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["nanodet.architecture"])


def test_inferred_export_states_its_assumptions_and_takes_activation(capsys, tmp_path, workdir):
    ckpt, deploy = _seeded_with_activation(tmp_path, "ReLU6")
    common = ["--ckpt", ckpt, "--input-size", "256,256"]
    code, out, err = _run(capsys, *common, "--out", workdir / "assumed.onnx")
    assert (code, err) == (0, "")
    assert (
        "assumed (not stored in the checkpoint): activation LeakyReLU, keep_ratio false, normalisation upstream "
        "default, upsampling bilinear; pass --config to use the training YAML"
    ) in out
    arch = _architecture(workdir / "assumed.onnx")
    assert arch["inferred"] is True and arch["assumed"][0] == "activation LeakyReLU"
    assert _onnx_vs_torch(workdir / "assumed.onnx", deploy) > 1e-3  # the wrong activation, as warned

    code, out, err = _run(capsys, *common, "--activation", "ReLU6", "--out", workdir / "stated.onnx")
    assert (code, err) == (0, "")
    assert "assumed (not stored in the checkpoint): keep_ratio false," in out and "activation" not in out
    arch = _architecture(workdir / "stated.onnx")
    assert arch["backbone"]["activation"] == arch["head"]["activation"] == "ReLU6"
    assert _onnx_vs_torch(workdir / "stated.onnx", deploy) < 1e-4


def test_config_export_states_no_assumptions(capsys, seeded_pth, workdir):
    code, out, _ = _run(capsys, "--ckpt", seeded_pth, "--config", SHAPES_YAML, "--out", workdir / "m.onnx")
    assert code == 0 and "assumed" not in out
    assert _architecture(workdir / "m.onnx")["inferred"] is False


def test_prelu_checkpoint_exports_without_config(capsys, tmp_path, workdir):
    ckpt, deploy = _seeded_with_activation(tmp_path, "PReLU")  # a distinct slope per PReLU
    code, out, err = _run(capsys, "--ckpt", ckpt, "--input-size", "256,256", "--out", workdir / "prelu.onnx")
    assert (code, err) == (0, ""), err
    assert "activation" not in out.split("assumed", 1)[1].split("\n", 1)[0]  # read from the weights
    assert _architecture(workdir / "prelu.onnx")["fpn"]["activation"] == "PReLU"
    assert _onnx_vs_torch(workdir / "prelu.onnx", deploy) < 1e-4


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--config", SHAPES_YAML, "--activation", "ReLU"], "--activation applies only"),
        (["--preset", "nanodet-plus-m_320", "--activation", "ReLU"], "--activation applies only"),
        (["--activation", "Swish"], "unknown activation 'Swish'"),
        (["--activation", "PReLU"], "no PReLU slope"),
    ],
    ids=["with config", "with preset", "unknown", "contradicts weights"],
)
def test_activation_option_errors(extra, needle, capsys, seeded_pth, workdir):
    code, out, err = _run(capsys, "--ckpt", seeded_pth, *extra, "--out", workdir / "m.onnx")
    assert (code, out) == (2, "")
    _assert_one_line_error(err, needle)
    assert list(workdir.iterdir()) == []


# ---------------------------------------------------------------- config types, self-consistency, tolerance
def _config_with_strides(tmp_path: Path, strides: object) -> Path:
    data = yaml.safe_load(SHAPES_YAML.read_text())
    data["model"]["arch"]["head"]["strides"] = strides
    path = tmp_path / "strides.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_scalar_strides_is_bad_input_not_internal_error(capsys, seeded_pth, tmp_path, workdir):
    config = _config_with_strides(tmp_path, 8)
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--config", config, "--out", workdir / "m.onnx")
    assert code == 2
    _assert_one_line_error(err, "head.strides must be")
    assert "internal error" not in err


def test_strides_not_matching_the_network_fail_before_writing(capsys, seeded_pth, tmp_path, workdir):
    config = _config_with_strides(tmp_path, [8, 16, 32, 128])  # the network's last level is stride 64
    code, _, err = _run(capsys, "--ckpt", seeded_pth, "--config", config, "--out", workdir / "m.onnx")
    assert code == 1
    _assert_one_line_error(err, "1360 rows", "give 1348 priors", "head.strides")
    assert list(workdir.iterdir()) == []


def test_output_layout_check(tmp_path):
    graph = onnx.load(str(fake_detector(tmp_path / "fake.onnx", size=(64, 64), num_priors=85, channels=(3, 32))))
    check_output_layout(graph, (64, 64), (8, 16, 32, 64), (3, 32))
    with pytest.raises(ExportError, match="'scores' has 3 channels .* gives 4"):
        check_output_layout(graph, (64, 64), (8, 16, 32, 64), (4, 32))
    with pytest.raises(ExportError, match="'boxes' has 32 channels .* gives 36"):
        check_output_layout(graph, (64, 64), (8, 16, 32, 64), (3, 36))
    with pytest.raises(ExportError, match="85 rows .* give 84 priors"):
        check_output_layout(graph, (64, 64), (8, 16, 32), (3, 32))


def test_tolerance_is_relative_above_the_floor():
    big = parity.ParityCase((1, 3, 256, 256), {"scores": 0.0, "boxes": 4.31}, {"scores": 1.0, "boxes": 2.87e6})
    tol = parity.tolerances([big], fp16=False)
    assert tol == {"scores": 1e-4, "boxes": pytest.approx(28.7)}  # 1.5e-6 relative error passes
    small = parity.ParityCase((1, 3, 256, 256), {"scores": 0.0, "boxes": 0.0}, {"scores": 0.5, "boxes": 3.0})
    assert parity.tolerances([small], fp16=False) == {"scores": 1e-4, "boxes": 1e-4}  # the floor
    assert parity.tolerances([small, big], fp16=False)["boxes"] == pytest.approx(28.7)
    assert parity.tolerance_rule(fp16=False) == "tolerance max(1e-4, 1e-5 × max |PyTorch output|) per output"


def test_summary_states_the_tolerance_rule(capsys, seeded_pth, workdir):
    code, out, _ = _run(capsys, "--ckpt", seeded_pth, "--out", workdir / "m.onnx", "--input-size", "256,256")
    assert code == 0
    assert "(<= 0.0001); tolerance max(1e-4, 1e-5 × max |PyTorch output|) per output; onnxruntime" in out
