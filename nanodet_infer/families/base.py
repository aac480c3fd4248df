"""The protocol every detector family implements, and the settings a detection call runs with.

The :class:`~nanodet_infer.Detector` is family-agnostic; per image it calls, in order::

    plan = family.plan(image_size, spec, settings)          # resize plan; plan.canvas_size (W, H) batches group on
    tensor = family.preprocess(image, plan, spec)            # float32 [3, Hc, Wc]
    outputs = backend.run(stacked tensors of one canvas)     # one array per model output, batch first
    xyxy, scores, class_ids = family.postprocess([o[slot] for o in outputs], plan, spec, settings)

``spec`` is the :class:`~nanodet_infer.model_spec.ModelSpec` that :meth:`Family.check_model` verified when
the model loaded; ``spec.layout`` is whatever the family's check returned (e.g. which output holds what).
Postprocess returns boxes xyxy float32 ``[K, 4]`` in original-image pixels, scores float32 ``[K]`` sorted
descending, class ids int64 ``[K]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import InvalidArgumentError, MetadataError
from .facts import Fact, check_facts

if TYPE_CHECKING:
    import numpy as np

    from ..backends.base import Backend
    from ..metadata import ModelMetadata
    from ..model_spec import ModelSpec


@dataclass(frozen=True)
class Settings:
    """One consistent set of a detector's tunable settings; every call reads it once, at its start.

    ``score_threshold`` / ``iou_threshold`` in ``[0, 1]``, ``max_detections >= 1``, ``keep_ratio``
    (letterbox vs stretch, as the family interprets it), ``multi_label`` (every class above the threshold
    per box, or the best one).
    """

    score_threshold: float
    iou_threshold: float
    max_detections: int
    keep_ratio: bool
    multi_label: bool


class Plan(Protocol):
    """What a family's resize plan exposes to the Detector: ``src_size`` and ``canvas_size``, both ``(W, H)``."""

    @property
    def src_size(self) -> tuple[int, int]: ...

    @property
    def canvas_size(self) -> tuple[int, int]: ...


class Family(ABC):
    """One detector family (a module-level singleton ``FAMILY`` in ``families/<family>/family.py``).

    Class attributes: :attr:`name` (the ``model_family`` string), :attr:`default_settings` (``score_threshold``,
    ``iou_threshold``, ``max_detections``, ``multi_label`` used when the caller gives none: the family's detection
    defaults, e.g. upstream's demo / ``detect.py``) and :attr:`foreign_facts` (the :class:`~.facts.Fact`
    declarations of the keyword arguments accepted for a model without metadata; ``nanodet-infer``'s
    foreign-model options are built from them).
    """

    name: ClassVar[str]
    default_settings: ClassVar[Mapping[str, Any]]
    foreign_facts: ClassVar[tuple[Fact, ...]]

    @abstractmethod
    def check_facts(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Foreign-model facts checked and normalised (``None`` values dropped); cheap, before loading.

        Raises :class:`~nanodet_infer.errors.InvalidArgumentError` for an unknown keyword or a bad value.
        """

    @abstractmethod
    def foreign_metadata(self, backend: Backend, facts: Mapping[str, Any]) -> ModelMetadata:
        """Metadata of a model without it, from checked ``facts``, the graph's shapes and the family's defaults."""

    @abstractmethod
    def check_model(self, backend: Backend, metadata: ModelMetadata) -> Any:
        """Verify the outputs against ``metadata``; return the family's layout (stored as ``spec.layout``).

        The input (name, NCHW rank, batch, ``input_size``) is checked before, by the caller. Raises
        :class:`~nanodet_infer.errors.IncompatibleModelError` naming the first mismatch.
        """

    @abstractmethod
    def model_keep_ratio(self, metadata: ModelMetadata) -> bool:
        """The resize the model was trained with: True to keep the aspect ratio (``keep_ratio=None``)."""

    def check_settings(self, settings: Settings, metadata: ModelMetadata) -> None:
        """Raise :class:`~nanodet_infer.errors.InvalidArgumentError` for settings this family cannot honour with
        this model; called when a Detector is built and when a setting is assigned. The default accepts all."""
        return

    def model_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        """The default settings for this model: :attr:`default_settings`, unless the family reads them from
        the metadata (torchvision's builders of one family differ in their defaults)."""
        return self.default_settings

    def evaluation_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        """The settings upstream's mAP evaluation runs this model with (the same four keys as
        :attr:`default_settings`): :meth:`model_settings` unless the family's evaluator differs from its demo."""
        return self.model_settings(metadata)

    def display_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        """The settings ``nanodet-infer detect`` draws and lists boxes with (the same four keys): upstream's demo
        settings, :meth:`model_settings`, unless those are the evaluator's (a threshold that keeps noise)."""
        return self.model_settings(metadata)

    @abstractmethod
    def plan(self, image_size: Sequence[int], spec: ModelSpec, settings: Settings) -> Plan:
        """The resize plan of an image of ``image_size`` ``(W, H)``."""

    @abstractmethod
    def preprocess(self, image: np.ndarray, plan: Any, spec: ModelSpec) -> np.ndarray:
        """BGR ``uint8 [H, W, 3]`` → network input float32 ``[3, Hc, Wc]`` (``plan.canvas_size``)."""

    @abstractmethod
    def postprocess(
        self, outputs: Sequence[np.ndarray], plan: Any, spec: ModelSpec, settings: Settings
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's outputs (batch axis removed) → ``(xyxy [K, 4], scores [K], class_ids [K])`` original pixels."""


class MetadataOnlyFamily(Family):
    """A :class:`Family` whose models always carry their facts (no foreign export exists to run): no
    :attr:`foreign_facts`, any fact keyword is refused, and a model without metadata is refused. ``display_name``
    (default: :attr:`name`) names the family in those messages."""

    foreign_facts = ()
    display_name: ClassVar[str | None] = None

    def check_facts(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        if facts:
            raise InvalidArgumentError(
                f"unknown keyword argument(s) {sorted(facts)}; {self.display_name or self.name} models carry their "
                "facts in their metadata (export them with nanodet-export)"
            )
        return {}

    def foreign_metadata(self, backend: Backend, facts: Mapping[str, Any]) -> ModelMetadata:
        raise MetadataError(
            f"the model carries no nanodet metadata; {self.display_name or self.name} models must be exported with "
            "nanodet-export"
        )


class LayoutModuleFamily(Family):
    """A :class:`Family` whose model-facing checks live in one ``layout`` module of its folder
    (``foreign_metadata``, ``resolve_layout``; the facts are checked by their declarations) and whose
    evaluator runs with fixed settings (:attr:`evaluation`, the four keys of :attr:`default_settings`)."""

    layout: ClassVar[ModuleType]
    evaluation: ClassVar[Mapping[str, Any]]

    def check_facts(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        return check_facts(self.foreign_facts, facts, self.name)

    def foreign_metadata(self, backend: Backend, facts: Mapping[str, Any]) -> ModelMetadata:
        return self.layout.foreign_metadata(backend, facts)

    def check_model(self, backend: Backend, metadata: ModelMetadata) -> Any:
        return self.layout.resolve_layout(backend, metadata)

    def evaluation_settings(self, metadata: ModelMetadata) -> Mapping[str, Any]:
        return self.evaluation
