"""The foreign-model options of ``nanodet-infer`` (detect, eval, serve) are built from the families'
``foreign_facts`` declarations: every declared fact is an option, parsed by its kind, and reaches the Detector."""

from __future__ import annotations

import sys

import pytest
from conftest import SHAPES

from nanodet_infer.cli import arguments
from nanodet_infer.errors import InvalidArgumentError
from nanodet_infer.families import FAMILIES, foreign_fact_options, get_family
from nanodet_infer.families.facts import Fact
from nanodet_infer.serve import command as serve_command

UPSTREAM = str(SHAPES / "upstream_export.onnx")


def _option_strings(parser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}  # noqa: SLF001


def test_every_declared_fact_is_an_option_of_detect_eval_and_serve() -> None:
    declared = {name for name, facts in foreign_fact_options().items() if facts[0][1].kind != "flag"}
    assert {"num_classes", "class_names", "reg_max", "strides", "input_size", "mean", "std", "anchors",
            "letterbox_color"} <= declared
    options = {f"--{name.replace('_', '-')}" for name in declared}
    parser = arguments.build_parser()
    for command in ("detect", "eval"):
        assert options <= _option_strings(arguments.subcommand_parser(parser, command))
    assert options <= _option_strings(serve_command.build_parser())


def test_a_fact_several_families_declare_has_one_kind() -> None:
    for name, declared in foreign_fact_options().items():
        assert len({fact.kind for _, fact in declared}) == 1, name


def test_each_kind_is_parsed_into_the_detector_keyword() -> None:
    argv = ["detect", "x.jpg", "--model", UPSTREAM, "--num-classes", "3", "--class-names", "a,b,c",
            "--reg-max", "7", "--strides", "8,16,32,64", "--input-size", "256,256", "--mean", "1,2.5,3",
            "--std", "4,5,6", "--anchors", "10,13,16,30;30,61,62,45", "--letterbox-color", "100"]
    options = arguments.detector_options(arguments.build_parser().parse_args(argv))
    assert {k: options[k] for k in ("num_classes", "class_names", "reg_max", "strides", "input_size", "mean", "std",
                                    "anchors", "letterbox_color")} == {
        "num_classes": 3, "class_names": ("a", "b", "c"), "reg_max": 7, "strides": (8, 16, 32, 64),
        "input_size": (256, 256), "mean": (1.0, 2.5, 3.0), "std": (4.0, 5.0, 6.0),
        "anchors": ((10.0, 13.0, 16.0, 30.0), (30.0, 61.0, 62.0, 45.0)), "letterbox_color": 100,
    }
    given_none = arguments.detector_options(arguments.build_parser().parse_args(["detect", "x.jpg", "-m", UPSTREAM]))
    assert not (set(given_none) & set(foreign_fact_options())) - {"keep_ratio"}  # a setting on the command line


def test_mean_and_std_options_reach_a_foreign_nanodet_model() -> None:
    argv = ["detect", "x.jpg", "--model", UPSTREAM, "--backend", "onnxruntime", "--mean", "1,2,3", "--std", "4,5,6"]
    det = arguments.make_detector(arguments.build_parser().parse_args(argv))
    assert (det.metadata.mean, det.metadata.std) == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))


def test_a_fact_the_model_family_does_not_declare_is_refused_naming_the_declared_ones() -> None:
    argv = ["detect", "x.jpg", "--model", UPSTREAM, "--backend", "onnxruntime", "--letterbox-color", "100"]
    with pytest.raises(InvalidArgumentError, match=r"\['letterbox_color'\].*nanodet-plus model.*'reg_max'"):
        arguments.make_detector(arguments.build_parser().parse_args(argv))


def test_bad_option_text_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        arguments.build_parser().parse_args(["detect", "x.jpg", "-m", UPSTREAM, "--mean", "1,x,3"])
    assert caught.value.code == 2 and "expected comma-separated numbers" in capsys.readouterr().err


def test_a_new_family_fact_becomes_an_option(monkeypatch) -> None:
    """One registry line and one declaration: the option, its help and its parsing follow."""
    import _toy_family

    monkeypatch.setitem(FAMILIES, "toy", "toy")
    monkeypatch.setitem(sys.modules, "nanodet_infer.families.toy.family", _toy_family)
    fact = Fact("toy_gains", "numbers", "per-channel gains of the toy", lambda name, value: tuple(value))
    monkeypatch.setattr(_toy_family.Toy, "foreign_facts", (fact,))
    try:
        parser = arguments.build_parser()
        detect = arguments.subcommand_parser(parser, "detect")
        action = next(a for a in detect._actions if "--toy-gains" in a.option_strings)  # noqa: SLF001
        assert action.help == "toy: per-channel gains of the toy"
        args = parser.parse_args(["detect", "x.jpg", "-m", UPSTREAM, "--toy-gains", "0.5,2"])
        assert arguments.foreign_facts(args) == {"toy_gains": (0.5, 2.0)}
    finally:
        get_family.cache_clear()
