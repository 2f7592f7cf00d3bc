"""Training speed: optimisation steps per second of the Cascade R-CNN presets at batch 4 (512 px patches).

Each step is what ``midog-viewer train`` does: forward with losses, backward, gradient clipping, SGD step;
on CUDA with mixed precision (float16 autocast + gradient scaling). The baseline, timed in the same run on
the same batches, is torchvision's Faster R-CNN ResNet-50-FPN (one detection stage, no cascade), so the
cascade's cost can be read as a ratio. Prints one JSON object.

    python benchmarks/train.py --device cpu --steps 2 --threads 2
    python benchmarks/train.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def batch(size: int, count: int, device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``count`` synthetic patches of ``size`` px with their labelled boxes, as training sees them."""
    from midog_viewer.synthetic import make_hpf
    from midog_viewer.classes import CLASS_NAMES

    images, targets = [], []
    for seed in range(count):
        hpf = make_hpf(seed, size, size)
        images.append(torch.from_numpy(hpf.image).permute(2, 0, 1).float().to(device))
        targets.append(
            {
                "boxes": torch.from_numpy(hpf.boxes).float().to(device),
                "labels": torch.tensor([CLASS_NAMES.index(n) for n in hpf.labels], dtype=torch.int64, device=device),
            }
        )
    return images, targets


def steps_per_second(model: torch.nn.Module, images, targets, device: torch.device, steps: int, warmup: int) -> float:
    """Time ``steps`` full optimisation steps after ``warmup`` untimed ones."""
    amp = device.type == "cuda"
    model.to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9,
                                weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 35.0)
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=["r50", "x101-64x4d"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 2 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 5 on CUDA)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.steps or (20 if device.type == "cuda" else 2)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)

    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from midog_viewer.detect import CascadeConfig, build_cascade_rcnn

    images, targets = batch(args.size, args.batch, device)
    torch.manual_seed(0)
    baseline = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                       min_size=args.size, max_size=args.size)
    baseline_rate = steps_per_second(baseline, images, targets, device, steps, warmup)
    del baseline
    results = {}
    for name in args.configs:
        torch.manual_seed(0)
        model = build_cascade_rcnn(CascadeConfig.named(name))
        rate = steps_per_second(model, images, targets, device, steps, warmup)
        results[name] = {
            "steps_per_s": round(rate, 4),
            "patches_per_s": round(rate * args.batch, 3),
            "vs_baseline": round(rate / baseline_rate, 3),
        }
        del model
    print(json.dumps({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "amp": device.type == "cuda",
        "threads": args.threads,
        "batch": args.batch,
        "patch_px": args.size,
        "timed_steps": steps,
        "baseline": {"name": "torchvision fasterrcnn_resnet50_fpn", "steps_per_s": round(baseline_rate, 4)},
        "configs": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
