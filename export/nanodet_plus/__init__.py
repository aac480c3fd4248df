"""NanoDet-Plus export adapter: upstream ``.ckpt``/``.pth`` → deploy model (no aux modules) → file.

Outputs ``scores`` ``[B, N, C]`` (sigmoided) and ``boxes`` ``[B, N, 4 * (reg_max + 1)]`` (raw DFL
logits); metadata :class:`~nanodet_infer.metadata.ModelMetadata`.
"""

from __future__ import annotations

from pathlib import Path

from nanodet_models import ACTIVATIONS, ModelConfig, NanoDetPlus, build_model, load_weights, read_checkpoint
from nanodet_models.sniff import pickle_names
from torch import nn

from nanodet_infer.families.nanodet_plus.warp import ARITHMETICS, DEFAULT_ARITHMETIC, check_arithmetic
from nanodet_infer.metadata import ModelMetadata

from .. import onnx_export, parity
from ..adapter import TRUST_CHECKPOINT, CommonArgs, ExportAdapter, Option, Prepared
from ..writer import PRODUCER
from .graph import AUX_PREFIXES, BOXES_NAME, SCORES_NAME, check_output_layout
from .resolve import architecture_summary, check_input_size, resolve_config

NAME = "nanodet-plus"
# Every NanoDet-Plus checkpoint holds its head's per-level output convs (state-dict key prefixes below).
_HEAD_KEYS = tuple(f"{prefix}head.gfl_cls." for prefix in ("", "model.", "avg_model.", "module."))


def recognise(path: Path) -> bool:
    """Whether ``path``'s pickle holds NanoDet-Plus state-dict keys (``head.gfl_cls.*``, with or without
    the Lightning/EMA/DataParallel prefix; content sniffing, nothing executed or loaded)."""
    return any(text.startswith(_HEAD_KEYS) for text in pickle_names(path).strings)


def prepare(
    ckpt: Path,
    common: CommonArgs,
    *,
    config: str | Path | None = None,
    preset: str | None = None,
    trust_checkpoint: bool = False,
    activation: str | None = None,
    resize_arithmetic: str | None = None,
) -> Prepared:
    """Read an upstream NanoDet-Plus training checkpoint (EMA weights when present) and build its deploy model."""
    arithmetic = check_arithmetic(resize_arithmetic or DEFAULT_ARITHMETIC)
    checkpoint = read_checkpoint(ckpt, trust=trust_checkpoint)
    cfg = resolve_config(
        checkpoint.state_dict,
        config=config,
        preset=preset,
        input_size=common.input_size,
        class_names=common.class_names,
        activation=activation,
    )
    model = build_model(cfg)
    load_weights(model, checkpoint.state_dict)
    return prepare_model(
        model,
        cfg,
        dynamic=bool(common.dynamic),
        source_sha256=checkpoint.sha256,
        used_ema=checkpoint.used_ema,
        source_format=checkpoint.source_format,
        resize_arithmetic=arithmetic,
    )


def prepare_model(
    model: NanoDetPlus,
    cfg: ModelConfig,
    *,
    dynamic: bool,
    source_sha256: str = "",
    used_ema: bool | None = None,
    source_format: str = "in-memory",
    resize_arithmetic: str = DEFAULT_ARITHMETIC,
) -> Prepared:
    """The deploy model (aux modules dropped) of an in-memory :class:`NanoDetPlus` built from ``cfg``;
    ``resize_arithmetic`` names the OpenCV warp arithmetic it was trained with (metadata ``resize_arithmetic``)."""
    size = tuple(cfg.input_size)
    check_input_size(size, cfg)
    deploy = model.deploy().eval()
    aux_dropped = sum(p.numel() for name, p in model.named_parameters() if name.startswith(AUX_PREFIXES))
    metadata = _metadata(cfg, deploy, dynamic=dynamic, source_sha256=source_sha256).replace(
        resize_arithmetic=resize_arithmetic
    )
    channels = (metadata.num_classes, metadata.num_box_channels)
    return Prepared(
        deploy=deploy,
        metadata=metadata,
        output_names=(SCORES_NAME, BOXES_NAME),
        channels=channels,
        trace_size=size,
        samples=parity.inputs(size, dynamic=dynamic),
        input_shape=["batch", 3, "height", "width"] if dynamic else [1, 3, size[1], size[0]],
        dynamic=dynamic,
        dynamic_hw=dynamic,
        check_graph=lambda graph, size_wh: check_output_layout(graph, size_wh, metadata.strides, channels),
        training_only=AUX_PREFIXES,
        aux_params_dropped=aux_dropped,
        used_ema=used_ema,
        source_format=source_format,
    )


def _metadata(cfg: ModelConfig, deploy: nn.Module, *, dynamic: bool, source_sha256: str) -> ModelMetadata:
    """The runtime's facts about the exported model (schema: ``nanodet_infer.metadata``)."""
    return ModelMetadata(
        num_classes=cfg.num_classes,
        class_names=tuple(cfg.class_names),
        reg_max=cfg.reg_max,
        strides=tuple(cfg.strides),
        input_size=tuple(cfg.input_size),
        dynamic_batch=dynamic,
        dynamic_hw=dynamic,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        channel_order="BGR",
        keep_ratio=cfg.keep_ratio,
        prior_offset=0.0,
        input_name=onnx_export.INPUT_NAME,
        scores_output=SCORES_NAME,
        boxes_output=BOXES_NAME,
        scores_activation="sigmoid",
        box_side_order="ltrb",
        producer=PRODUCER,
        source_sha256=source_sha256,
        architecture=architecture_summary(cfg, deploy),
    )


ADAPTER = ExportAdapter(
    name=NAME,
    description="NanoDet-Plus (RangiLyu/nanodet): Lightning .ckpt or model_best .pth state dicts",
    recognise=recognise,
    prepare=prepare,
    options=(
        Option(
            "config",
            Path,
            "NanoDet-Plus training YAML (default: infer the architecture from the weights)",
            exclusive="architecture",
        ),
        Option("preset", str, "built-in NanoDet-Plus config, e.g. nanodet-plus-m_320", exclusive="architecture"),
        Option(
            "activation",
            str,
            "activation the checkpoint was trained with, when there is no --config/--preset (a checkpoint does "
            "not store it; default: PReLU if its weights hold PReLU slopes, else LeakyReLU assumed): "
            + ", ".join(ACTIVATIONS),
            metavar="NAME",
        ),
        Option(
            "resize_arithmetic",
            str,
            "the OpenCV warpPerspective arithmetic the model was trained with, which the runtime then reproduces "
            f"whatever OpenCV is installed: {', '.join(ARITHMETICS)} (default {DEFAULT_ARITHMETIC}, the release "
            "upstream's references were made with; opencv-4 for training under OpenCV 4.x)",
            metavar="NAME",
        ),
        TRUST_CHECKPOINT,
    ),
    ema_weights="EMA (avg_model.*)",
    assumption_fix="pass --config to use the training YAML",
)
