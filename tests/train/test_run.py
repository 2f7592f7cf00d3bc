"""Training runs end to end: a subprocess trained, cancelled by SIGTERM, resumed and loaded; bad input refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from midog_viewer.cli import main
from midog_viewer.detect import load_model
from midog_viewer.train import read_progress

#: Small and quick: 128 px patches, few sampled RoIs, two patches a step, a progress line every step.
FAST = ["--config", "tiny", "--patch-size", "128", "--rcnn-samples", "32", "--batch-size", "2",
        "--warmup-steps", "5", "--log-every", "1", "--seed", "1"]


def _train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "midog_viewer", "train", *args]


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("training made no progress in time")
        time.sleep(0.2)


@pytest.mark.slow
def test_subprocess_train_cancel_resume_and_load(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _train_command("--synthetic", "3", "--synthetic-size", "256", "--val-fraction", "0.34",
                       "--epochs", "3", *FAST, "--out", str(run)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    _wait_for(lambda: any(e["event"] == "step" and e["step"] >= 2 for e in read_progress(run)), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    events = read_progress(run)
    assert events[0]["event"] == "start" and events[0]["train_images"] == 2 and events[0]["val_images"] == 1
    steps = [e for e in events if e["event"] == "step"]
    assert {"step", "epoch", "losses", "loss", "lr", "eta_s"} <= set(steps[0])
    assert all(np.isfinite(e["loss"]) for e in steps)
    cancelled = events[-1]
    assert cancelled["event"] == "cancelled"
    assert json.loads((run / "metrics.json").read_text())["status"] == "cancelled"
    model, info = load_model(run / "last.safetensors")  # the last checkpoint is kept, loadable
    assert info.provenance["step"] == cancelled["step"] and info.provenance["cancelled"] is True

    result = subprocess.run(
        _train_command("--resume", str(run), "--out", str(run), "--json"),
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    events = read_progress(run)
    resumed = events[events.index(cancelled) + 1 :]
    first_step = next(e for e in resumed if e["event"] == "step")
    assert first_step["step"] == cancelled["step"] + 1  # continues where it stopped, not from scratch
    assert resumed[-1]["event"] == "done" and resumed[-1]["step"] == first_step["total_steps"]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["epochs_done"] == 3
    assert summary["val_f1"] == metrics["val_f1"] and 0.0 <= metrics["val_f1"] <= 1.0
    assert sorted(p.name for p in run.glob("epoch_*.safetensors")) == [f"epoch_00{i}.safetensors" for i in (1, 2, 3)]

    model, info = load_model(run / "best.safetensors")
    assert info.provenance["epoch"] == metrics["best_epoch"]
    with torch.no_grad():
        (out,) = model([torch.full((3, 128, 128), 200.0)])
    assert set(out) == {"boxes", "scores", "labels"}


@pytest.mark.slow
def test_reproduce_the_paper_command_on_a_midog_like_stand_in(midog_dataset, tmp_path, capsys):
    """`midog-viewer train --coco MIDOG.json --images DIR --split train_val_split.txt --config …`, tiny and short."""
    run = tmp_path / "run"
    code = main(["train", "--coco", str(midog_dataset["json"]), "--images", str(midog_dataset["images"]),
                 "--split", str(midog_dataset["split"]), *FAST, "--epochs", "1", "--out", str(run), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["train_images"], metrics["val_images"]) == (2, 1)  # the split file's sides, by image
    assert metrics["val_mitoses"] == 2 and metrics["best_epoch"] == 1
    assert json.loads(captured.out)["val_f1"] == metrics["val_f1"]
    run_record = json.loads((run / "run.json").read_text())
    assert run_record["data"]["split"] == str(midog_dataset["split"].resolve())
    # Loadable by `midog-viewer detect --model`, the way users will use it.
    out = tmp_path / "detections.json"
    assert main(["detect", str(midog_dataset["images"] / "004.tiff"), "--model", str(run / "best.safetensors"),
                 "--device", "cpu", "--out", str(out)]) == 0
    assert "detections" in json.loads(out.read_text())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "tiny"], "no training data"),
        (["--config", "tiny", "--coco", "missing.json", "--images", "."], "annotation file not found"),
        (["--config", "tiny", "--synthetic", "1"], "at least 2 are needed"),
        (["--synthetic", "3"], "name a model configuration"),
        (["--config", "tiny", "--synthetic", "3", "--init", "junk.safetensors"], "cannot fine-tune from"),
        (["--config", "tiny", "--resume", "not-a-run"], "not a run folder"),
        (["--config", "tiny", "--synthetic", "3", "--split", "split.txt"], "--split applies to"),
        (["--config", "tiny", "--synthetic", "3", "--scale-jitter", "1.5"], "scale jitter must lie in"),
        (["--config", "tiny", "--synthetic", "3", "--blur-sigma", "9"], "largest blur sigma must lie in"),
        (["--config", "tiny", "--synthetic", "3", "--repeat", "synthetic=2"], "apply to crop mosaics only"),
        (["--config", "tiny", "--synthetic", "3", "--lab-transfer", "0.5"], "applies to crop mosaics only"),
        (["--config", "tiny", "--synthetic", "3", "--lab-transfer", "1.5"], "LAB transfer probability must lie in"),
        (["--config", "tiny", "--synthetic", "3", "--translate", "-4"], "random shift must be a whole number"),
        (["--config", "tiny", "--synthetic", "3", "--second-look", "100"], "second look's window must be a multiple"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Path("junk.safetensors").write_bytes(b"not a checkpoint")
    Path("not-a-run").mkdir()
    code = main(["train", *args, "--out", "run"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("midog-viewer: error:") and message in err
    assert not Path("run", "progress.jsonl").exists()


def test_scale_jitter_sets_the_outermost_training_scales():
    """``--scale-jitter 0.4`` on 512 px patches trains at 0.6-1.4 of the patch, in five steps."""
    import argparse

    from midog_viewer.cli.train import _recipe
    from midog_viewer.train import Recipe

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from midog_viewer.cli.train import register

    register(sub)
    args = parser.parse_args(["train", "--synthetic", "3", "--scale-jitter", "0.4", "--out", "run"])
    scales = _recipe(args, Recipe).scales
    assert scales[0] / 512 == pytest.approx(0.6, abs=0.01) and scales[-1] / 512 == pytest.approx(1.4, abs=0.01)
    assert len(scales) == 5 and Recipe().scales == (384, 448, 512, 576, 640)


def test_an_existing_run_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_bytes(b"")
    assert main(["train", "--config", "tiny", "--synthetic", "3", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    assert main(["train", "--config", "tiny", "--synthetic", "3", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tunes_an_imported_mmdet_checkpoint(shared_data, tmp_path, capsys):
    """`--init` takes any loadable checkpoint, an mmdet `.pth` included; it is also the baseline compared with."""
    mmdet_checkpoint = shared_data / "mmdet_reference" / "cascade_r18_tiny.pth"
    run = tmp_path / "run"
    fast = [a for a in FAST if a not in ("--config", "tiny")]
    code = main(["train", "--init", str(mmdet_checkpoint), "--synthetic", "3", "--synthetic-size", "256",
                 "--val-fraction", "0.34", *fast, "--epochs", "1", "--out", str(run), "--json"])
    assert code == 0, capsys.readouterr().err
    events = read_progress(run)
    assert events[0]["event"] == "baseline" and 0.0 <= events[0]["val_f1"] <= 1.0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baseline_f1"] == events[0]["val_f1"]
    model, info = load_model(run / "best.safetensors")
    assert info.format == "midog-safetensors" and info.config.backbone == "resnet18"
    assert info.config.fpn_channels == 64  # the mmdet checkpoint's architecture, not a preset's


def test_a_checkpoint_of_another_architecture_than_config_is_refused(shared_data, tmp_path, capsys):
    mmdet_checkpoint = shared_data / "mmdet_reference" / "cascade_r18_tiny.pth"
    code = main(["train", "--init", str(mmdet_checkpoint), "--config", "r50", "--synthetic", "3",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "does not match the checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_follows_the_new_recipe(tmp_path):
    """Resuming with more epochs and another learning rate continues the saved state under the new settings."""
    from midog_viewer.train import DataSpec, Recipe, train

    data = DataSpec(synthetic=3, synthetic_size=256, val_fraction=0.34)
    recipe = Recipe(epochs=1, patch_size=128, rcnn_samples=32, batch_size=2, warmup_steps=2, log_every=1)
    first = train(data, tmp_path / "run", config="tiny", recipe=recipe)
    assert first.status == "done" and first.epochs_done == 1
    more = Recipe(**{**recipe.to_dict(), "epochs": 2, "lr": 0.001})
    second = train(None, tmp_path / "run", recipe=more, resume=tmp_path / "run")
    assert second.status == "done" and second.epochs_done == 2 and second.step == 2 * first.step
    steps = [e for e in read_progress(tmp_path / "run") if e["event"] == "step" and e["step"] > first.step]
    assert steps and all(e["lr"] == pytest.approx(0.001) for e in steps)


@pytest.mark.slow
def test_random_background_patches_train_with_finite_losses(tmp_path, capsys):
    """Patches at random positions (many without any labelled object) join the epoch and train cleanly;
    the tuned score threshold is stored in the checkpoint."""
    out = tmp_path / "run"
    code = main(["train", "--synthetic", "3", "--synthetic-size", "256", "--val-fraction", "0.34", *FAST,
                 "--epochs", "1", "--random-patches", "4", "--tune-threshold", "--out", str(out), "--quiet", "--json"])
    assert code == 0
    events = read_progress(out)
    start = next(e for e in events if e["event"] == "start")
    run = json.loads((out / "run.json").read_text())
    assert run["recipe"]["random_patches_per_image"] == 4
    from midog_viewer.train.data import DataSpec, gather

    split = gather(DataSpec.from_dict(run["data"]))
    objects = sum(len(im.boxes) for im in split.train)
    assert start["train_patches"] == objects + 4 * len(split.train)
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert losses and all(np.isfinite(losses))
    best_config = load_model(out / "best.safetensors")[1].config
    assert best_config.mpp == 0.25  # the synthetic fields' spacing
    # --tune-threshold: the threshold of the best validation F1 becomes the checkpoint's operating point.
    from midog_viewer.train.validate import CANDIDATE_THRESHOLDS

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["score_threshold_chosen_on_validation"] is True
    assert metrics["score_threshold"] in CANDIDATE_THRESHOLDS
    assert best_config.score_threshold == metrics["score_threshold"] == metrics["best"]["score_threshold"]


def test_the_model_records_the_median_pixel_spacing_it_learnt_at():
    from types import SimpleNamespace

    from midog_viewer.train.run import training_mpp

    images = [SimpleNamespace(mpp=m) for m in (0.2425, 0.2273, 0.25, 0.0)]  # 0.0: unknown, left out
    assert training_mpp(images, 0.25) == 0.2425
    assert training_mpp([SimpleNamespace(mpp=0.0)], 0.25) == 0.25


@pytest.mark.slow
def test_a_model_trained_on_20x_images_is_validated_and_saved_at_20x(tmp_path, monkeypatch):
    """Images at 0.5 µm/px: validation does not resample them, and the checkpoint records 0.5."""
    import midog_viewer.detect.engine as engine
    import midog_viewer.train.data as data_module
    from midog_viewer.train import DataSpec, Recipe, train
    from midog_viewer.train.sources import synthetic_images

    def at_20x(*args, **kwargs):
        images = synthetic_images(*args, **kwargs)
        for image in images:
            image.mpp = 0.5
        return images

    monkeypatch.setattr(data_module, "synthetic_images", at_20x)
    asked: list[tuple[float, float]] = []
    real_zoom = engine.resample_zoom
    monkeypatch.setattr(engine, "resample_zoom", lambda s, m: asked.append((s, m)) or real_zoom(s, m))
    recipe = Recipe(epochs=1, patch_size=128, rcnn_samples=32, batch_size=2, warmup_steps=2, log_every=1)
    result = train(DataSpec(synthetic=3, synthetic_size=256, val_fraction=0.34), tmp_path / "run", config="tiny",
                   recipe=recipe)
    assert result.status == "done"
    assert asked and all(pair == (0.5, 0.5) for pair in asked)  # validation images seen at zoom 1
    assert load_model(result.best_checkpoint)[1].config.mpp == 0.5


def test_the_loop_keeps_one_model_configuration(tmp_path):
    """What checkpoints record is the one configuration; the model in training carries it plus the recipe's
    sampling sizes, and a change to it (the tuned operating point) reaches both. Steps come from total_steps."""
    import dataclasses

    from midog_viewer.detect import CascadeConfig, build_cascade_rcnn
    from midog_viewer.train.data import Split
    from midog_viewer.train.sources import synthetic_images
    from midog_viewer.train.recipe import Recipe, total_steps
    from midog_viewer.train.run import _Loop

    torch.set_num_threads(1)
    images = synthetic_images(2, size=128)
    recipe = Recipe(epochs=3, batch_size=2, patch_size=128, rcnn_samples=32, stain_normalise=False)
    tiny = CascadeConfig.named("tiny")
    model = build_cascade_rcnn(dataclasses.replace(tiny, **recipe.model_overrides()))
    recorded = dataclasses.replace(tiny, mpp=0.23)
    loop = _Loop(Split(images[:1], images[1:]), model, recorded, recipe, torch.device("cpu"), tmp_path, lambda: False)
    assert loop.model_config == recorded
    assert loop.model.config == dataclasses.replace(recorded, rcnn_num_samples=32)
    loop.model_config = dataclasses.replace(loop.model_config, score_threshold=0.7)
    assert loop.model.config.score_threshold == 0.7 and loop.model.config.mpp == 0.23
    assert loop.model.config.rcnn_num_samples == 32 and loop.model_config.rcnn_num_samples == tiny.rcnn_num_samples
    assert loop.total_steps == total_steps(len(loop.dataset), recipe) == 3 * loop.steps_per_epoch
