"""The verified facts of a loaded model: its metadata, its family and the family's output layout.

Two kinds of model run here:

* **ours** (exported with metadata): ``model_family`` in the metadata selects the family.
* **foreign** (no metadata, e.g. upstream NanoDet's ``tools/export_onnx.py`` output): the caller names the
  family (default :data:`~nanodet_infer.families.DEFAULT_FAMILY`) and gives the facts the file lacks as
  keyword arguments; the family fills the rest from its defaults and the graph's shapes.

:func:`resolve_model_spec` checks the input (name, NCHW with 3 channels, batch 1 or dynamic, ``input_size``
against static H/W) here and the outputs through the family, and raises
:class:`~nanodet_infer.errors.IncompatibleModelError` naming the first mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, Shape, format_shape
from .errors import IncompatibleModelError, InvalidArgumentError, MetadataError
from .families import DEFAULT_FAMILY, get_family
from .families.base import Family
from .metadata import KEY_PREFIX, ModelMetadata


@dataclass(frozen=True)
class ModelSpec:
    """Verified facts of a loaded model.

    ``metadata.dynamic_batch`` / ``metadata.dynamic_hw`` describe the loaded graph (not what an exporter
    claimed). ``layout`` is what :meth:`Family.check_model` returned; ``embedded`` tells whether the facts
    came from the file.
    """

    metadata: ModelMetadata
    family: Family
    layout: Any
    embedded: bool


def resolve_model_spec(backend: Backend, model_family: str | None = None, **facts: Any) -> ModelSpec:
    """The verified :class:`ModelSpec` of ``backend``'s model.

    Embedded ``nanodet.*`` metadata wins; ``model_family`` and ``facts`` (the family's foreign facts, checked
    by its ``check_facts``) are for models without it, except ``class_names``, which renames the classes of a
    model with metadata (as many names as it has classes). Raises :class:`InvalidArgumentError` for unknown,
    malformed or misplaced facts, :class:`~nanodet_infer.errors.MetadataError` for malformed metadata or a
    missing fact the graph cannot supply, :class:`IncompatibleModelError` when the graph does not fit.
    """
    family = get_family(model_family or DEFAULT_FAMILY)
    facts = family.check_facts(facts)
    embedded = any(key.startswith(KEY_PREFIX) for key in backend.properties)
    if embedded:
        names = facts.pop("class_names", None)
        if facts:
            raise InvalidArgumentError(
                f"the model carries nanodet metadata; {sorted(facts)} can only be given for a model without it "
                "(class_names may be: it renames the model's classes)"
            )
        meta = _renamed(ModelMetadata.from_properties(backend.properties), names)
        if model_family is not None and model_family != meta.model_family:
            raise InvalidArgumentError(
                f"the model's metadata says model_family {meta.model_family!r}, not {model_family!r}; "
                "leave model_family out for a model with metadata"
            )
        family = get_family(meta.model_family)
        if backend.input_name != meta.input_name:
            raise IncompatibleModelError(
                f"the model input is named {backend.input_name!r} but its metadata says {meta.input_name!r}"
            )
    else:
        meta = family.foreign_metadata(backend, facts)
    _check_input(backend.input_shape, meta)
    meta = meta.replace(
        dynamic_batch=backend.input_shape[0] is None,
        dynamic_hw=backend.input_shape[2] is None or backend.input_shape[3] is None,
    )
    return ModelSpec(meta, family, family.check_model(backend, meta), embedded)


def _renamed(meta: ModelMetadata, names: tuple[str, ...] | None) -> ModelMetadata:
    """``meta`` with ``names`` as its class names (one per output class, in channel order); ``None``: unchanged."""
    if names is None:
        return meta
    if len(names) != meta.num_classes:
        raise InvalidArgumentError(
            f"{len(names)} class names were given but the model has {meta.num_classes} classes "
            f"(its names: {_preview(meta.class_names)}); give one name per class, in the model's order"
        )
    return meta.replace(class_names=tuple(names))


def _preview(names: tuple[str, ...], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def output_index(backend: Backend, name: str, key: str) -> int:
    """Index of the output named ``name`` (metadata key ``key``); :class:`IncompatibleModelError` when absent."""
    if name not in backend.output_names:
        raise IncompatibleModelError(
            f"metadata {KEY_PREFIX + key} names output {name!r}, but the model's outputs are "
            f"{list(backend.output_names)}; the file does not match its metadata"
        )
    return backend.output_names.index(name)


def static_input_size(shape: Shape) -> tuple[int, int]:
    """``(W, H) = (shape[3], shape[2])`` of a static NCHW input (see docs/runtime.md on upstream's non-square)."""
    if len(shape) != 4 or shape[2] is None or shape[3] is None:
        raise MetadataError("the model input has symbolic H/W; pass input_size=(W, H) it was trained at")
    return shape[3], shape[2]


def _check_input(shape: Shape, meta: ModelMetadata) -> None:
    if len(shape) != 4 or shape[1] not in (3, None):
        raise IncompatibleModelError(f"the model input has shape {format_shape(shape)}; expected [B, 3, H, W]")
    if shape[0] is not None and shape[0] != 1:
        raise IncompatibleModelError(
            f"the model input has a static batch of {shape[0]}; export it with batch 1 or a dynamic batch axis"
        )
    if (shape[2] is None) != (shape[3] is None):
        raise IncompatibleModelError(
            f"the model input {format_shape(shape)} has one symbolic spatial axis; "
            "export with both H and W static or dynamic"
        )
    width, height = meta.input_size
    if (shape[2] is not None and shape[2] != height) or (shape[3] is not None and shape[3] != width):
        raise IncompatibleModelError(
            f"the model input is {format_shape(shape)} but input_size is {width}x{height} (WxH); they must agree"
        )
