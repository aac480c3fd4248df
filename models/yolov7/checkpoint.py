"""Reading upstream YOLOv7 training checkpoints without running code from them.

Upstream's ``train.py`` saves ``{'model': <pickled models.yolo.Model>.half(), 'ema': ..., 'optimizer':
..., 'epoch': ..., ...}``: whole pickled modules, which ``torch.load(weights_only=True)`` refuses and a
plain ``torch.load`` would import upstream's source (and could run any code a crafted file names). Here
the pickle is read by a restricted unpickler: it admits only the upstream class names of the modules
this package builds, the ``torch.nn`` containers and layers they use, torch's tensor-rebuild functions,
``collections.OrderedDict``, ``set`` and numpy's array/scalar reconstruction, and maps every module
class onto an inert stand-in that only records its pickled attributes. Anything else raises
:class:`UnsafeCheckpointError` naming the class, before it is imported. The weights, the YAML dict
(``model.yaml``) and the class names are then read from the stand-ins.
"""

from __future__ import annotations

import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanodet_infer.errors import CheckpointError, UnsafeCheckpointError

from ..checkpoint import check_archive, file_sha256, float32_weights
from ..sniff import pickle_names
from .model import MODULES, YOLOv7, check_model_dict, estimate_parameters

UPSTREAM_MODULES = {
    "models.yolo": frozenset({"Model", "Detect", "IDetect", "IAuxDetect"}),
    "models.common": frozenset(
        {
            "ImplicitA",
            "ImplicitM",
            *(n for n in MODULES if "." not in n and n not in ("Detect", "IDetect", "IAuxDetect")),
        }
    ),
}
_TORCH_NN = {
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.batchnorm": {"BatchNorm2d"},
    "torch.nn.modules.activation": {"SiLU", "LeakyReLU", "ReLU", "Hardswish"},
    "torch.nn.modules.linear": {"Identity"},
    "torch.nn.modules.pooling": {"MaxPool2d"},
    "torch.nn.modules.upsampling": {"Upsample"},
    "torch.nn.modules.container": {"Sequential", "ModuleList"},
}
# numpy's array and scalar rebuild functions (found via __reduce__: their module moved in numpy 2)
_NP_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_NP_SCALAR = np.float64(0).__reduce__()[0]
_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): OrderedDict,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _NP_RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _NP_SCALAR for core in ("core", "_core")},
}
UPSTREAM_MODEL = ("models.yolo", "Model")


class StandIn:
    """An upstream module as pickled: its class name (``upstream``) and its attributes (``state``)."""

    upstream = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state)

    def children(self) -> Mapping[str, StandIn | None]:
        """Sub-modules by attribute name (``_modules``)."""
        return self.state.get("_modules", {})


_STAND_INS: dict[tuple[str, str], type[StandIn]] = {
    (module, name): type(name, (StandIn,), {"upstream": f"{module}.{name}"})
    for module, names in [*UPSTREAM_MODULES.items(), *_TORCH_NN.items()]
    for name in names
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _STAND_INS:
            return _STAND_INS[key]
        if key in _FUNCTIONS:
            return _FUNCTIONS[key]
        if module in UPSTREAM_MODULES:
            raise UnsafeCheckpointError(
                f"the checkpoint uses upstream module {module}.{name}, which this exporter does not build "
                f"(supported: {', '.join(sorted(UPSTREAM_MODULES[module]))}); nothing was executed"
            )
        raise UnsafeCheckpointError(
            f"the checkpoint's pickle references {module}.{name}, which is not an upstream YOLOv7 or torch "
            "class this exporter admits; nothing was executed (re-save the weights as a state_dict)"
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


#: What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and a ``load`` function.
RESTRICTED_PICKLE = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=_restricted_load, __name__="restricted")


@dataclass(frozen=True)
class YOLOv7Checkpoint:
    """What an upstream YOLOv7 training checkpoint holds, read safely.

    ``state_dict``: float32 tensors keyed as :class:`~.model.YOLOv7` (``model.<i>...``); ``yaml``: the
    model's config dict (upstream ``model.yaml``); ``names``: class names; ``used_ema``: the ``ema``
    entry was taken (as upstream ``attempt_load``), not ``model``; ``module_types``: the upstream class name
    of every pickled sub-module by its path (``model.0``, ``model.0.act``, ...); ``sha256``: the file's digest.
    """

    state_dict: dict[str, torch.Tensor]
    yaml: dict[str, Any]
    names: tuple[str, ...]
    used_ema: bool
    module_types: dict[str, str]
    sha256: str


def is_yolov7_checkpoint(path: str | Path) -> bool:
    """Whether ``path``'s pickle names upstream's ``models.yolo.Model`` (content sniffing, nothing executed)."""
    return ".".join(UPSTREAM_MODEL) in pickle_names(path).globals


def read_yolov7_checkpoint(path: str | Path) -> YOLOv7Checkpoint:
    """Read an upstream ``train.py``/``train_aux.py`` checkpoint with the restricted unpickler.

    Takes ``ema`` when present (upstream ``attempt_load``), else ``model``; fp16 tensors become float32.
    Raises :class:`ModelLoadError` (missing file), :class:`UnsafeCheckpointError` (a class outside the
    allow-list) or :class:`CheckpointError` (not such a checkpoint, or an archive
    :func:`~nanodet_models.checkpoint.check_archive` refuses).
    """
    path = Path(path)
    check_archive(path)  # missing file, zip bombs, odd member names: refused before torch reads anything
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch zip checkpoint; pass the .pt written by YOLOv7's train.py")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable YOLOv7 checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not train.py's checkpoint dict")
    used_ema = bool(obj.get("ema"))
    model = obj.get("ema") or obj.get("model")
    if not isinstance(model, StandIn) or model.upstream != ".".join(UPSTREAM_MODEL):
        raise CheckpointError(f"{path} has no pickled models.yolo.Model under 'ema' or 'model'; is it a YOLOv7 .pt?")
    yaml = model.state.get("yaml")
    if not isinstance(yaml, Mapping):
        raise CheckpointError(f"{path}: the pickled model has no yaml dict; it was not built by YOLOv7's Model")
    check_model_dict(yaml)  # nc, multiples, anchors, layer indices: bounded before anything is built from them
    names = model.state.get("names") or [str(i) for i in range(yaml["nc"])]
    if not isinstance(names, list | tuple) or len(names) != yaml["nc"]:
        raise CheckpointError(
            f"{path}: the pickled model names {_count(names)} classes but its yaml has nc={yaml['nc']}; "
            "pass the .pt written by YOLOv7's train.py"
        )
    state_dict = _state_dict(model, path)
    _check_against_weights(yaml, state_dict, path)
    return YOLOv7Checkpoint(
        state_dict=state_dict,
        yaml=dict(yaml),
        names=tuple(str(n) for n in names),
        used_ema=used_ema,
        module_types=_module_types(model, path),
        sha256=file_sha256(path),
    )


def _count(names: Any) -> str:
    return str(len(names)) if isinstance(names, list | tuple) else f"a {type(names).__name__} of"


def _check_against_weights(yaml: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Before a model is built from ``yaml``: its head's output channels must be the stored head's, and the weights
    it would build (a lower bound, :func:`~.model.estimate_parameters`) no more than the checkpoint stores."""
    last = len(yaml["backbone"]) + len(yaml["head"]) - 1
    anchors = yaml["anchors"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    head = state_dict.get(f"model.{last}.m.0.weight")
    if head is None or head.ndim != 4 or head.shape[0] != na * (yaml["nc"] + 5):
        found = "no head weights" if head is None else f"head weights of shape {list(head.shape)}"
        raise CheckpointError(
            f"{path}: the yaml (nc={yaml['nc']}, {na} anchors) needs a head of {na * (yaml['nc'] + 5)} output channels "
            f"at layer {last}, but the checkpoint stores {found}; pass the .pt written by YOLOv7's train.py"
        )
    stored = sum(t.numel() for t in state_dict.values())
    needed = estimate_parameters(yaml)
    if needed > stored:
        raise CheckpointError(
            f"{path}: its yaml builds at least {needed} weights but the checkpoint stores {stored}; the yaml does "
            "not describe these weights (width_multiple / depth_multiple changed?)"
        )


MAX_MODULE_DEPTH = 32
"""Deepest nesting of pickled sub-modules walked (upstream's YOLOv7 models nest 4 deep)."""
MAX_MODULES = 100_000
"""Most pickled sub-modules walked (YOLOv7-E6E has about 1,500)."""


def _modules(root: StandIn, path: Path) -> list[tuple[str, StandIn]]:
    """Every stand-in below ``root`` with its dotted path, depth first as ``nn.Module.named_modules`` lists them:
    each object once (a shared child or a cycle is walked at its first path only), at most
    :data:`MAX_MODULE_DEPTH` deep and :data:`MAX_MODULES` in all. :class:`CheckpointError` for a malformed tree."""
    found: list[tuple[str, StandIn]] = []
    seen = {id(root)}

    def visit(module: StandIn, prefix: str, depth: int) -> None:
        children = module.children()
        if not isinstance(children, Mapping):
            raise CheckpointError(
                f"{path}: module {prefix.rstrip('.') or 'model'} holds its sub-modules as a {type(children).__name__}, "
                "not a mapping; the pickle is not one torch wrote"
            )
        for name, child in children.items():
            if child is None or id(child) in seen:
                continue
            if not isinstance(child, StandIn):
                raise CheckpointError(f"{path}: sub-module {prefix}{name} is a {type(child).__name__}, not a module")
            if depth >= MAX_MODULE_DEPTH or len(seen) >= MAX_MODULES:
                raise CheckpointError(
                    f"{path}: its modules nest deeper than {MAX_MODULE_DEPTH} or number more than {MAX_MODULES}; "
                    "pass the .pt written by YOLOv7's train.py"
                )
            seen.add(id(child))
            found.append((f"{prefix}{name}", child))
            visit(child, f"{prefix}{name}.", depth + 1)

    visit(root, "", 0)
    return found


def _module_types(root: StandIn, path: Path) -> dict[str, str]:
    """Upstream class name (without module) of every stand-in below ``root``, keyed by its path."""
    return {name: module.upstream.rsplit(".", 1)[-1] for name, module in _modules(root, path)}


def _state_dict(root: StandIn, path: Path) -> dict[str, torch.Tensor]:
    """``nn.Module.state_dict()`` of a stand-in tree: parameters and persistent buffers, fp16 → float32 once
    :func:`~nanodet_models.tensor_bounds.check_tensors` has checked the stored views."""
    raw: dict[str, torch.Tensor] = {}
    for prefix, module in [("", root), *((f"{name}.", m) for name, m in _modules(root, path))]:
        skip = module.state.get("_non_persistent_buffers_set", set())
        parameters, buffers = module.state.get("_parameters", {}), module.state.get("_buffers", {})
        if not isinstance(parameters, Mapping) or not isinstance(buffers, Mapping) or not isinstance(skip, set):
            raise CheckpointError(f"{path}: module {prefix.rstrip('.') or 'model'} has malformed parameters")
        for name, tensor in [*parameters.items(), *((k, v) for k, v in buffers.items() if k not in skip)]:
            if tensor is None:
                continue
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(f"{path}: {prefix}{name} is a {type(tensor).__name__}, not a tensor")
            raw[prefix + str(name)] = tensor.detach()
    return float32_weights(raw, path)[0]


def load_yolov7_weights(model: YOLOv7, checkpoint: YOLOv7Checkpoint) -> None:
    """Copy the checkpoint's weights into ``model`` (built from ``checkpoint.yaml``) strictly.

    Raises :class:`CheckpointError` naming the first layer whose upstream class differs from ours, or
    the keys that do not fit.
    """
    ours = {path: type(module).__name__ for path, module in model.named_modules() if path}
    paths = [*ours, *(p for p in checkpoint.module_types if p not in ours)]
    differ = next((p for p in paths if ours.get(p) != checkpoint.module_types.get(p)), None)
    if differ is not None:
        raise CheckpointError(
            f"module {differ} of the checkpoint is {checkpoint.module_types.get(differ, 'absent')} but its YAML "
            f"builds {ours.get(differ, 'nothing')}; the pickled model does not match its own yaml"
        )
    expected = model.state_dict()
    problems = [
        k for k in expected if k not in checkpoint.state_dict or checkpoint.state_dict[k].shape != expected[k].shape
    ]
    problems += [k for k in checkpoint.state_dict if k not in expected]
    if problems:
        raise CheckpointError(
            f"checkpoint does not fit the model built from its yaml: {len(problems)} key(s) missing, extra or "
            f"of another shape, e.g. {', '.join(problems[:3])}"
        )
    model.load_state_dict(checkpoint.state_dict)
