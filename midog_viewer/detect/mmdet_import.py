"""Import MMDetection 3.x Cascade R-CNN checkpoints and configs without mmdet and without running their code.

* The ``.pth`` that mmengine's Runner saves is read with ``torch.load(weights_only=True)``; the few non-tensor
  globals it pickles (HistoryBuffer, numpy reconstructors, ``getattr``) are replaced by inert stand-ins, and
  every other global (``os.system``, ``builtins.open``, …) makes torch refuse the file before anything runs.
* The Python config is parsed with :mod:`ast` and evaluated as data (literals, ``dict(...)``, names bound
  earlier in the file, arithmetic); anything else is a :class:`ModelError`.
"""

from __future__ import annotations

import ast
import copy
import operator
import re
from pathlib import Path
from typing import Any

import torch

from midog_viewer.classes import CLASS_NAMES, canonical_class
from midog_viewer.detect.config import STAGE_CHANNELS, CascadeConfig
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
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others for foreign files
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        reason = f"it would load {found.group(1)}, which is not tensor data" if found else str(exc).splitlines()[0]
        raise ModelError(f"refusing to load {path}: {reason}.") from None
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path} does not hold a checkpoint dictionary.")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelError(f"{path} has no state_dict of tensors.")
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    state_dict = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    return state_dict, meta


# ----------------------------------------------------------------------------------------------- config as data

_BINARY_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def read_mmdet_config(source: str | Path, *, text: str | None = None) -> dict[str, Any]:
    """Evaluate an mmdet Python config as data: ``name = <literal | dict(...) | earlier name | arithmetic>``."""
    label = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"cannot read mmdet config {label}: {exc.strerror or exc}.") from exc
    try:
        tree = ast.parse(text, filename=label)
    except SyntaxError as exc:
        raise ModelError(f"mmdet config {label} is not valid Python (line {exc.lineno}: {exc.msg}).") from exc
    namespace: dict[str, Any] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ModelError(
                f"mmdet config {label}, line {statement.lineno}: only 'name = value' assignments can be read "
                f"as data, not {type(statement).__name__}."
            )
        name = statement.targets[0].id
        namespace[name] = _evaluate(statement.value, namespace, label)
    if "_base_" in namespace:
        raise ModelError(
            f"mmdet config {label} inherits from _base_ files; give the flat config mmdet writes to its work_dir."
        )
    return namespace


def _evaluate(node: ast.AST, namespace: dict[str, Any], label: str) -> Any:
    def fail(what: str) -> ModelError:
        return ModelError(f"mmdet config {label}, line {getattr(node, 'lineno', '?')}: {what} cannot be read as data.")

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_evaluate(e, namespace, label) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, namespace, label) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise fail("'**' inside a dict literal")
        return {_evaluate(k, namespace, label): _evaluate(v, namespace, label) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name):
        if node.id in namespace:
            return copy.deepcopy(namespace[node.id])
        raise fail(f"the name {node.id!r} (not assigned earlier in the file)")
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise fail(f"the call {ast.unparse(node.func)}(...)")
        result: dict[str, Any] = {}
        for keyword in node.keywords:
            value = _evaluate(keyword.value, namespace, label)
            if keyword.arg is None:
                if not isinstance(value, dict):
                    raise fail("'**' of something that is not a dict")
                result.update(value)
            else:
                result[keyword.arg] = value
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        operand = _evaluate(node.operand, namespace, label)
        if not isinstance(operand, (int, float)):
            raise fail("a sign on a non-number")
        return _UNARY_OPS[type(node.op)](operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left = _evaluate(node.left, namespace, label)
        right = _evaluate(node.right, namespace, label)
        if not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
            raise fail("arithmetic on non-numbers")
        try:
            return _BINARY_OPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise fail("a division by zero") from None
    raise fail(f"a {type(node).__name__} expression")


# ------------------------------------------------------------------------------------- mmdet config → ours

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
        fields["frozen_stages"] = int(backbone.get("frozen_stages", -1))
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
        fields["fpn_channels"] = int(neck["out_channels"])

        rpn = model["rpn_head"]
        need(rpn.get("type") == "RPNHead", f"RPN head {rpn.get('type')!r}")
        anchors = rpn.get("anchor_generator", {})
        need(anchors.get("type", "AnchorGenerator") == "AnchorGenerator", f"anchor generator {anchors.get('type')!r}")
        fields["rpn_feat_channels"] = int(rpn.get("feat_channels", rpn.get("in_channels", 256)))
        fields["anchor_scales"] = tuple(float(s) for s in anchors.get("scales", (8,)))
        fields["anchor_ratios"] = tuple(float(r) for r in anchors.get("ratios", (0.5, 1.0, 2.0)))
        fields["anchor_strides"] = tuple(int(s) for s in anchors.get("strides", (4, 8, 16, 32, 64)))
        fields["rpn_bbox_beta"] = float(rpn.get("loss_bbox", {}).get("beta", 1.0 / 9.0))
        need(tuple(rpn.get("bbox_coder", {}).get("target_stds", (1.0,) * 4)) == (1.0,) * 4, "RPN target_stds ≠ 1")

        roi = model["roi_head"]
        need(roi.get("type") == "CascadeRoIHead", f"RoI head {roi.get('type')!r}")
        extractor = roi["bbox_roi_extractor"]
        layer = extractor.get("roi_layer", {})
        need(layer.get("type") == "RoIAlign" and layer.get("aligned", True), "a RoI layer other than aligned RoIAlign")
        fields["roi_output_size"] = int(layer.get("output_size", 7))
        fields["roi_sampling_ratio"] = int(layer.get("sampling_ratio", 0))
        fields["roi_strides"] = tuple(int(s) for s in extractor.get("featmap_strides", (4, 8, 16, 32)))
        fields["roi_finest_scale"] = int(extractor.get("finest_scale", 56))
        heads = roi["bbox_head"]
        need(isinstance(heads, list) and len(heads) == roi.get("num_stages", 3), "bbox_head is not one dict per stage")
        stds = []
        for head in heads:
            need(head.get("type") == "Shared2FCBBoxHead", f"bbox head {head.get('type')!r}")
            need(head.get("reg_class_agnostic", False), "class-specific box regression")
            need(head.get("roi_feat_size", 7) == fields["roi_output_size"], "roi_feat_size ≠ RoIAlign output size")
            coder = head.get("bbox_coder", {})
            need(tuple(coder.get("target_means", (0.0,) * 4)) == (0.0,) * 4, "non-zero target_means")
            stds.append(tuple(float(s) for s in coder["target_stds"]))
            need(head.get("fc_out_channels") == heads[0].get("fc_out_channels"), "stages with different fc widths")
            need(head.get("num_classes") == heads[0].get("num_classes"), "stages with different num_classes")
        fields["stage_target_stds"] = tuple(stds)
        fields["fc_channels"] = int(heads[0].get("fc_out_channels", 1024))
        fields["rcnn_bbox_beta"] = float(heads[0].get("loss_bbox", {}).get("beta", 1.0))
        fields["stage_loss_weights"] = tuple(float(w) for w in roi.get("stage_loss_weights", (1, 0.5, 0.25)))
        num_classes = int(heads[0]["num_classes"])

        preprocessor = model.get("data_preprocessor", {})
        need(preprocessor.get("bgr_to_rgb", True), "a model fed BGR images (bgr_to_rgb False)")
        fields["pixel_mean"] = tuple(float(v) for v in preprocessor.get("mean", (123.675, 116.28, 103.53)))
        fields["pixel_std"] = tuple(float(v) for v in preprocessor.get("std", (58.395, 57.12, 57.375)))
        fields["pad_size_divisor"] = int(preprocessor.get("pad_size_divisor", 32))

        train_cfg = model.get("train_cfg") or {}
        if train_cfg:
            rpn_train = train_cfg["rpn"]
            fields["rpn_pos_iou"] = float(rpn_train["assigner"]["pos_iou_thr"])
            fields["rpn_neg_iou"] = float(rpn_train["assigner"]["neg_iou_thr"])
            fields["rpn_min_pos_iou"] = float(rpn_train["assigner"]["min_pos_iou"])
            fields["rpn_num_samples"] = int(rpn_train["sampler"]["num"])
            fields["rpn_pos_fraction"] = float(rpn_train["sampler"]["pos_fraction"])
            fields["rpn_allowed_border"] = float(rpn_train.get("allowed_border", 0))
            proposal = train_cfg["rpn_proposal"]
            fields["rpn_train_nms_pre"] = int(proposal["nms_pre"])
            fields["rpn_train_max_per_img"] = int(proposal["max_per_img"])
            stages = train_cfg["rcnn"]
            fields["stage_iou_thresholds"] = tuple(float(s["assigner"]["pos_iou_thr"]) for s in stages)
            fields["rcnn_num_samples"] = int(stages[0]["sampler"]["num"])
            fields["rcnn_pos_fraction"] = float(stages[0]["sampler"]["pos_fraction"])
        test_cfg = model["test_cfg"]
        fields["rpn_test_nms_pre"] = int(test_cfg["rpn"]["nms_pre"])
        fields["rpn_test_max_per_img"] = int(test_cfg["rpn"]["max_per_img"])
        fields["rpn_nms_iou"] = float(test_cfg["rpn"]["nms"]["iou_threshold"])
        fields["test_score_thr"] = float(test_cfg["rcnn"]["score_thr"])
        fields["test_nms_iou"] = float(test_cfg["rcnn"]["nms"]["iou_threshold"])
        fields["test_max_per_img"] = int(test_cfg["rcnn"]["max_per_img"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ModelError(f"{label}: the model config is incomplete or malformed ({type(exc).__name__}: {exc}).") from None

    classes = (data.get("metainfo") or {}).get("classes")
    if classes is None:
        need(num_classes == len(CLASS_NAMES), f"{num_classes} classes without class names")
        classes = CLASS_NAMES
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


def load_mmdet_checkpoint(path: str | Path, mmdet_config: str | Path | None = None):
    """Build our model from an mmdet checkpoint and its config (or the config text in ``meta['cfg']``)."""
    from midog_viewer.detect.checkpoint import ModelInfo, load_weights
    from midog_viewer.detect.model import build_cascade_rcnn

    path = Path(path)
    state_dict, meta = read_runner_checkpoint(path)
    if mmdet_config is not None:
        config_data = read_mmdet_config(mmdet_config)
        config_label = str(mmdet_config)
    elif isinstance(meta.get("cfg"), str):
        config_label = f"{path} (meta cfg)"
        config_data = read_mmdet_config(config_label, text=meta["cfg"])
    else:
        raise ModelError(f"{path} carries no config; pass the mmdet .py config it was trained with.")
    dataset_classes = (meta.get("dataset_meta") or {}).get("classes")
    if not (config_data.get("metainfo") or {}).get("classes") and dataset_classes:
        config_data.setdefault("metainfo", {})["classes"] = tuple(dataset_classes)
    cfg = config_from_mmdet(config_data, config_label)
    model = build_cascade_rcnn(cfg)
    load_weights(model, convert_state_dict(state_dict, str(path)), str(path))
    provenance = {
        "imported_from": "mmdet",
        "checkpoint": str(path),
        "config": config_label,
        **{k: meta[k] for k in ("epoch", "iter", "mmengine_version", "experiment_name", "time") if k in meta},
    }
    return model.eval(), ModelInfo(path=path, format="mmdet", config=cfg, provenance=provenance)
