"""Forward and backward of the cascade with tiny configs, and the output contract."""

from __future__ import annotations

import pytest
import torch

from midog_viewer.detect import CascadeConfig, build_cascade_rcnn
from midog_viewer.errors import ModelError


def _images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, 160, 192, generator=generator) * 255, torch.rand(3, 128, 128, generator=generator) * 255]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[40.0, 30.0, 90.0, 80.0], [100.0, 60.0, 150.0, 110.0]]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([[20.0, 20.0, 70.0, 70.0]]), "labels": torch.tensor([0])},
    ]


def test_training_returns_finite_losses_and_gradients(tiny_model):
    tiny_model.train()
    losses = tiny_model(_images(), _targets())
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"} | {
        f"s{s}.{k}" for s in range(3) for k in ("loss_cls", "loss_bbox")
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    head_grad = tiny_model.roi_heads.stages[2].cls_score.weight.grad
    stem_grad = tiny_model.backbone.body.conv1.weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    assert losses["s0.loss_bbox"] > 0 and losses["loss_rpn_bbox"] > 0


def test_image_without_ground_truth_has_finite_losses_and_zero_box_loss(tiny_model):
    tiny_model.train()
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}]
    losses = tiny_model(_images()[:1], empty)
    assert all(torch.isfinite(v) for v in losses.values())
    for name in ("loss_rpn_bbox", "s0.loss_bbox", "s1.loss_bbox", "s2.loss_bbox"):
        assert losses[name].item() == 0.0
    assert losses["loss_rpn_cls"] > 0 and losses["s0.loss_cls"] > 0
    sum(losses.values()).backward()


def test_stage_loss_weights_are_applied(tiny_config):
    torch.manual_seed(0)
    model = build_cascade_rcnn(tiny_config).train()
    # With identical stage heads and near-zero logits, the classification losses scale as 1 : 0.5 : 0.25.
    for stage in model.roi_heads.stages[1:]:
        stage.load_state_dict(model.roi_heads.stages[0].state_dict())
    torch.manual_seed(3)
    losses = model(_images()[:1], [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}])
    assert losses["s1.loss_cls"].item() == pytest.approx(0.5 * losses["s0.loss_cls"].item(), rel=1e-2)
    assert losses["s2.loss_cls"].item() == pytest.approx(0.25 * losses["s0.loss_cls"].item(), rel=1e-2)


def test_eval_outputs_follow_the_contract(tiny_model):
    tiny_model.eval()
    with torch.no_grad():
        outputs = tiny_model(_images())
    assert len(outputs) == 2
    for output, image in zip(outputs, _images()):
        boxes, scores, labels = output["boxes"], output["scores"], output["labels"]
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
        assert scores.shape == labels.shape == (boxes.shape[0],)
        assert labels.dtype == torch.int64
        assert boxes.shape[0] <= tiny_model.config.test_max_per_img
        assert bool((scores > tiny_model.config.test_score_thr).all())
        assert bool((scores[:-1] >= scores[1:]).all())
        assert bool((boxes[:, 2] <= image.shape[2]).all()) and bool((boxes[:, 3] <= image.shape[1]).all())
        assert set(labels.tolist()) <= {0, 1}


def test_presets_and_sizes():
    tiny = build_cascade_rcnn(CascadeConfig.named("tiny"))
    elements = sum(t.numel() for t in tiny.state_dict().values())
    assert elements * 4 <= 25_000_000  # ships as float32 safetensors of at most 25 MB
    assert CascadeConfig.named("x101-64x4d").backbone == "resnext101_64x4d"
    with pytest.raises(ModelError, match="unknown model preset"):
        CascadeConfig.named("r200")
    with pytest.raises(ModelError, match="unsupported backbone"):
        CascadeConfig(backbone="vgg16")


def test_bad_images_are_refused(tiny_model):
    tiny_model.eval()
    with pytest.raises(ModelError, match="RGB"):
        tiny_model([torch.zeros(1, 64, 64)])
    tiny_model.train()
    with pytest.raises(ModelError, match="target"):
        tiny_model(_images())


def test_config_round_trips_through_json(tiny_config):
    assert CascadeConfig.from_json(tiny_config.to_json()) == tiny_config
    with pytest.raises(ModelError, match="unknown fields"):
        CascadeConfig.from_dict({"wheels": 4})
