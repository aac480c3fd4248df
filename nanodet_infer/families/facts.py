"""Foreign-model facts declared as data: what a model without metadata needs to be told.

A family lists its :class:`Fact` declarations as :attr:`~.base.Family.foreign_facts` (in the style of
OpenVINO Model API's ``parameters()``): a name (the :class:`~nanodet_infer.Detector` keyword), a
:data:`FactKind` saying how a command line spells the value, a help text, and the check that normalises a
Python value. :func:`check_facts` applies them, and ``nanodet-infer``'s foreign-model options are built from
the union of every family's declarations (:func:`~nanodet_infer.families.foreign_fact_options`), so a family
that adds a fact adds its option too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidArgumentError

FactKind = Literal["int", "ints", "numbers", "levels", "size", "names", "flag"]
"""How a fact is written on a command line: ``int`` ``3``; ``ints`` ``8,16,32``; ``numbers`` ``103.53,116.28,123.675``;
``levels`` one comma list per level, ``;`` between levels (``12,16,19,36;36,75,76,55``); ``size`` ``W,H``;
``names`` comma-separated names or a names file; ``flag`` is not a command-line fact (it is a setting there, e.g.
``--keep-ratio``)."""


@dataclass(frozen=True)
class Fact:
    """One foreign-model fact: the keyword ``name``, its command-line ``kind``, ``help`` for ``--help``, and
    ``check(name, value)`` returning the normalised value or raising
    :class:`~nanodet_infer.errors.InvalidArgumentError` naming the fix."""

    name: str
    kind: FactKind
    help: str
    check: Callable[[str, Any], Any]


def check_facts(declared: Sequence[Fact], facts: Mapping[str, Any], model: str) -> dict[str, Any]:
    """``facts`` checked against the ``declared`` facts of a ``model`` (e.g. ``"NanoDet-Plus"``) and normalised;
    a fact given as ``None`` counts as not given.

    Raises :class:`InvalidArgumentError` for a keyword that is not declared (naming the declared ones) or a
    value its check refuses; ranges and agreement between facts are checked when the metadata is built.
    """
    by_name = {fact.name: fact for fact in declared}
    unknown = sorted(set(facts) - set(by_name))
    if unknown:
        raise InvalidArgumentError(
            f"unknown keyword argument(s) {unknown}; model facts for a {model} model without metadata are "
            f"{list(by_name)}"
        )
    return {name: by_name[name].check(name, value) for name, value in facts.items() if value is not None}
