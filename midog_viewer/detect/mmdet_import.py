"""Convert MMDetection 3.x Cascade R-CNN checkpoints and configs to ours, without mmdet and without running code.

* The ``.pth`` that mmengine's Runner saves is read as weights only (:mod:`midog_viewer.detect.torch_file`);
  the few non-tensor globals it pickles (HistoryBuffer, numpy reconstructors, ``getattr``) are replaced by
  inert stand-ins, and every other global (``os.system``, ``builtins.open``, …) is refused before anything runs.
* The Python config is read as bounded data (:mod:`midog_viewer.detect.pyconfig`) and translated into a
  :class:`CascadeConfig`; state-dict keys are renamed to ours. Building the model is
  :mod:`midog_viewer.detect.checkpoint`'s job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from midog_viewer.classes import CLASS_NAMES, canonical_class
from midog_viewer.detect.config import STAGE_CHANNELS, CascadeConfig
from midog_viewer.detect.pyconfig import read_mmdet_config
from midog_viewer.detect.torch_file import load_weights_only
from midog_viewer.errors import ModelError


class InertStandIn:
    """Takes the place of any non-tensor object in an mmengine checkpoint; accepts and ignores its state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> InertStandIn:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _inert_call(*args: Any, **kwargs: Any) -> InertStandIn:
    """Stands in for a function the pickle would call (numpy reconstructors, ``getattr``): calls nothing."""
    return InertStandIn()


#: Globals mmengine's Runner pickles besides tensors, each mapped to an inert stand-in (by full name).
_STAND_INS: list[tuple[Any, str]] = [
    (InertStandIn, "mmengine.logging.history_buffer.HistoryBuffer"),
    (InertStandIn, "numpy.ndarray"),
    (_inert_call, "numpy._core.multiarray._reconstruct"),
    (_inert_call, "numpy.core.multiarray._reconstruct"),
    (_inert_call, "numpy._core.multiarray.scalar"),
    (_inert_call, "numpy.core.multiarray.scalar"),
    (_inert_call, "numpy.dtype"),
    (_inert_call, "builtins.getattr"),
]


def read_runner_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``state_dict`` and ``meta`` of an mmengine checkpoint, read without executing anything in it."""
    path = Path(path)
    checkpoint = load_weights_only(path, stand_ins=_STAND_INS)
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path} does not hold a checkpoint dictionary.")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelError(f"{path} has no state_dict of tensors.")
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    if not all(isinstance(k, str) for k in state_dict):
        raise ModelError(f"{path} has a state_dict whose keys are not names.")
    state_dict = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    return state_dict, meta


# ------------------------------------------------------------------------------------- mmdet config → ours

def _int(value: Any) -> int:
    """An integer setting as written; ``int()`` would take ``"64"`` or ``64.7`` silently."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{str(value)[:40]!r} where an integer belongs")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{str(value)[:40]!r} where a number belongs")
    return float(value)


_RESNEXT = {(101, 64, 4): "resnext101_64x4d", (101, 32, 8): "resnext101_32x8d"}


def config_from_mmdet(data: dict[str, Any], label: str = "mmdet config") -> CascadeConfig:
    """Translate an mmdet Cascade R-CNN config (read as data) into a :class:`CascadeConfig`, or say what is unsupported."""

    def need(condition: bool, what: str) -> None:
        if not condition:
            raise ModelError(f"{label}: unsupported architecture: {what}.")

    model = data.get("model")
    need(isinstance(model, dict), "it has no 'model' dict")
    need(model.get("type") == "CascadeRCNN", f"model type {model.get('type')!r} is not CascadeRCNN")
    fields: dict[str, Any] = {"source": label}
    try:
        backbone = model["backbone"]
        depth = backbone.get("depth")
        if backbone.get("type") == "ResNeXt":
            key = (depth, backbone.get("groups", 1), backbone.get("base_width", 4))
            need(key in _RESNEXT, f"ResNeXt-{depth} {key[1]}x{key[2]}d")
            fields["backbone"] = _RESNEXT[key]
        else:
            need(backbone.get("type") == "ResNet", f"backbone {backbone.get('type')!r}")
            need(depth in (18, 34, 50, 101), f"ResNet depth {depth}")
            fields["backbone"] = f"resnet{depth}"
        need(backbone.get("style", "pytorch") == "pytorch", f"backbone style {backbone.get('style')!r}")
        need(backbone.get("dcn") is None, "deformable convolutions in the backbone")
        need(not backbone.get("deep_stem", False), "a deep stem")
        need(backbone.get("norm_cfg", {}).get("type", "BN") in ("BN", "SyncBN"), "a norm layer other than BN")
        out_indices = tuple(backbone.get("out_indices", (0, 1, 2, 3)))
        need(out_indices in ((0, 1, 2), (0, 1, 2, 3)), f"backbone out_indices {out_indices}")
        fields["backbone_stages"] = len(out_indices)
        fields["frozen_stages"] = _int(backbone.get("frozen_stages", -1))
        fields["norm_eval"] = bool(backbone.get("norm_eval", True))

        neck = model["neck"]
        need(neck.get("type") == "FPN", f"neck {neck.get('type')!r}")
        block = "basic" if depth in (18, 34) else "bottleneck"
        need(
            list(neck.get("in_channels", [])) == list(STAGE_CHANNELS[block][: len(out_indices)]),
            f"FPN in_channels {neck.get('in_channels')}",
        )
        need(neck.get("num_outs", 5) == 5 and not neck.get("add_extra_convs", False), "FPN extra levels by convs")
        need(neck.get("start_level", 0) == 0, "an FPN start_level other than 0")
        fields["fpn_channels"] = _int(neck["out_channels"])

        rpn = model["rpn_head"]
        need(rpn.get("type") == "RPNHead", f"RPN head {rpn.get('type')!r}")
        anchors = rpn.get("anchor_generator", {})
        need(anchors.get("type", "AnchorGenerator") == "AnchorGenerator", f"anchor generator {anchors.get('type')!r}")
        fields["rpn_feat_channels"] = _int(rpn.get("feat_channels", rpn.get("in_channels", 256)))
        fields["anchor_scales"] = tuple(_float(s) for s in anchors.get("scales", (8,)))
        fields["anchor_ratios"] = tuple(_float(r) for r in anchors.get("ratios", (0.5, 1.0, 2.0)))
        fields["anchor_strides"] = tuple(_int(s) for s in anchors.get("strides", (4, 8, 16, 32, 64)))
        fields["rpn_bbox_beta"] = _float(rpn.get("loss_bbox", {}).get("beta", 1.0 / 9.0))
        need(tuple(rpn.get("bbox_coder", {}).get("target_stds", (1.0,) * 4)) == (1.0,) * 4, "RPN target_stds ≠ 1")

        roi = model["roi_head"]
        need(roi.get("type") == "CascadeRoIHead", f"RoI head {roi.get('type')!r}")
        extractor = roi["bbox_roi_extractor"]
        layer = extractor.get("roi_layer", {})
        need(layer.get("type") == "RoIAlign" and layer.get("aligned", True), "a RoI layer other than aligned RoIAlign")
        fields["roi_output_size"] = _int(layer.get("output_size", 7))
        fields["roi_sampling_ratio"] = _int(layer.get("sampling_ratio", 0))
        fields["roi_strides"] = tuple(_int(s) for s in extractor.get("featmap_strides", (4, 8, 16, 32)))
        fields["roi_finest_scale"] = _int(extractor.get("finest_scale", 56))
        heads = roi["bbox_head"]
        need(isinstance(heads, list) and len(heads) == roi.get("num_stages", 3), "bbox_head is not one dict per stage")
        stds = []
        for head in heads:
            need(head.get("type") == "Shared2FCBBoxHead", f"bbox head {head.get('type')!r}")
            need(head.get("reg_class_agnostic", False), "class-specific box regression")
            need(head.get("roi_feat_size", 7) == fields["roi_output_size"], "roi_feat_size ≠ RoIAlign output size")
            coder = head.get("bbox_coder", {})
            need(tuple(coder.get("target_means", (0.0,) * 4)) == (0.0,) * 4, "non-zero target_means")
            stds.append(tuple(_float(s) for s in coder["target_stds"]))
            need(head.get("fc_out_channels") == heads[0].get("fc_out_channels"), "stages with different fc widths")
            need(head.get("num_classes") == heads[0].get("num_classes"), "stages with different num_classes")
        fields["stage_target_stds"] = tuple(stds)
        fields["fc_channels"] = _int(heads[0].get("fc_out_channels", 1024))
        fields["rcnn_bbox_beta"] = _float(heads[0].get("loss_bbox", {}).get("beta", 1.0))
        fields["stage_loss_weights"] = tuple(_float(w) for w in roi.get("stage_loss_weights", (1, 0.5, 0.25)))
        num_classes = _int(heads[0]["num_classes"])

        preprocessor = model.get("data_preprocessor", {})
        need(preprocessor.get("bgr_to_rgb", True), "a model fed BGR images (bgr_to_rgb False)")
        fields["pixel_mean"] = tuple(_float(v) for v in preprocessor.get("mean", (123.675, 116.28, 103.53)))
        fields["pixel_std"] = tuple(_float(v) for v in preprocessor.get("std", (58.395, 57.12, 57.375)))
        fields["pad_size_divisor"] = _int(preprocessor.get("pad_size_divisor", 32))

        train_cfg = model.get("train_cfg") or {}
        if train_cfg:
            rpn_train = train_cfg["rpn"]
            fields["rpn_pos_iou"] = _float(rpn_train["assigner"]["pos_iou_thr"])
            fields["rpn_neg_iou"] = _float(rpn_train["assigner"]["neg_iou_thr"])
            fields["rpn_min_pos_iou"] = _float(rpn_train["assigner"]["min_pos_iou"])
            fields["rpn_num_samples"] = _int(rpn_train["sampler"]["num"])
            fields["rpn_pos_fraction"] = _float(rpn_train["sampler"]["pos_fraction"])
            fields["rpn_allowed_border"] = _float(rpn_train.get("allowed_border", 0))
            proposal = train_cfg["rpn_proposal"]
            fields["rpn_train_nms_pre"] = _int(proposal["nms_pre"])
            fields["rpn_train_max_per_img"] = _int(proposal["max_per_img"])
            stages = train_cfg["rcnn"]
            fields["stage_iou_thresholds"] = tuple(_float(s["assigner"]["pos_iou_thr"]) for s in stages)
            fields["rcnn_num_samples"] = _int(stages[0]["sampler"]["num"])
            fields["rcnn_pos_fraction"] = _float(stages[0]["sampler"]["pos_fraction"])
        test_cfg = model["test_cfg"]
        fields["rpn_test_nms_pre"] = _int(test_cfg["rpn"]["nms_pre"])
        fields["rpn_test_max_per_img"] = _int(test_cfg["rpn"]["max_per_img"])
        fields["rpn_nms_iou"] = _float(test_cfg["rpn"]["nms"]["iou_threshold"])
        fields["test_score_thr"] = _float(test_cfg["rcnn"]["score_thr"])
        fields["test_nms_iou"] = _float(test_cfg["rcnn"]["nms"]["iou_threshold"])
        fields["test_max_per_img"] = _int(test_cfg["rcnn"]["max_per_img"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ModelError(f"{label}: the model config is incomplete or malformed ({type(exc).__name__}: {exc}).") from None

    metainfo = data.get("metainfo") or {}
    need(isinstance(metainfo, dict), "metainfo that is not a dict")
    classes = metainfo.get("classes")
    if classes is None:
        need(num_classes == len(CLASS_NAMES), f"{num_classes} classes without class names")
        classes = CLASS_NAMES
    need(isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes),
         f"class names {str(classes)[:60]} that are not a list of names")
    need(len(classes) == num_classes, f"{len(classes)} class names for {num_classes} classes")
    fields["class_names"] = tuple(canonical_class(c) for c in classes)
    return CascadeConfig(**fields)


# ------------------------------------------------------------------------------------------- key mapping

_KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^backbone\.(.+)$"), r"backbone.body.\1"),
    (re.compile(r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$"), r"backbone.fpn.lateral_convs.\1.\2"),
    (re.compile(r"^neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)$"), r"backbone.fpn.output_convs.\1.\2"),
    (re.compile(r"^rpn_head\.rpn_conv\.(weight|bias)$"), r"rpn.conv.\1"),
    (re.compile(r"^rpn_head\.rpn_cls\.(weight|bias)$"), r"rpn.cls_logits.\1"),
    (re.compile(r"^rpn_head\.rpn_reg\.(weight|bias)$"), r"rpn.bbox_pred.\1"),
    (re.compile(r"^roi_head\.bbox_head\.(\d+)\.shared_fcs\.0\.(weight|bias)$"), r"roi_heads.stages.\1.fc6.\2"),
    (re.compile(r"^roi_head\.bbox_head\.(\d+)\.shared_fcs\.1\.(weight|bias)$"), r"roi_heads.stages.\1.fc7.\2"),
    # fc_cls keeps mmdet's order (background last): our heads use the same convention.
    (re.compile(r"^roi_head\.bbox_head\.(\d+)\.fc_cls\.(weight|bias)$"), r"roi_heads.stages.\1.cls_score.\2"),
    (re.compile(r"^roi_head\.bbox_head\.(\d+)\.fc_reg\.(weight|bias)$"), r"roi_heads.stages.\1.bbox_pred.\2"),
]


def map_mmdet_key(key: str) -> str | None:
    """Our parameter name for an mmdet state_dict key, or None when no rule covers it."""
    for pattern, replacement in _KEY_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def convert_state_dict(state_dict: dict[str, torch.Tensor], label: str) -> dict[str, torch.Tensor]:
    """Rename every key; keys no rule covers are a :class:`ModelError` naming them."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        ours = map_mmdet_key(key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = tensor
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise ModelError(f"{label} has weights this Cascade R-CNN does not use: {', '.join(unknown[:3])}{more}.")
    return converted


def mmdet_config(path: Path, state_meta: dict[str, Any], config_path: str | Path | None) -> tuple[CascadeConfig, str]:
    """Our config for an mmdet checkpoint: from ``config_path`` or else the text in ``meta['cfg']``, with the
    class names from the config's metainfo or else the checkpoint's ``dataset_meta``; and its label."""
    if config_path is not None:
        config_data = read_mmdet_config(config_path)
        label = str(config_path)
    elif isinstance(state_meta.get("cfg"), str):
        label = f"{path} (meta cfg)"
        config_data = read_mmdet_config(label, text=state_meta["cfg"])
    else:
        raise ModelError(f"{path} carries no config; pass the mmdet .py config it was trained with.")
    dataset_meta = state_meta.get("dataset_meta")
    dataset_classes = dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None
    metainfo = config_data.get("metainfo") or {}
    if isinstance(metainfo, dict) and not metainfo.get("classes") and isinstance(dataset_classes, (list, tuple)):
        config_data["metainfo"] = {**metainfo, "classes": tuple(dataset_classes)}
    return config_from_mmdet(config_data, label), label


def mmdet_provenance(path: Path, state_meta: dict[str, Any], config_label: str) -> dict[str, Any]:
    """What our checkpoint records about an imported mmdet one (JSON-safe values only)."""
    kept = {k: state_meta[k] for k in ("epoch", "iter", "mmengine_version", "experiment_name", "time")
            if isinstance(state_meta.get(k), (str, int, float))}
    return {"imported_from": "mmdet", "checkpoint": str(path), "config": config_label, **kept}
