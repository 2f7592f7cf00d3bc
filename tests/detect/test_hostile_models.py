"""Hostile model files and configs: refused in one line of our words, before anything big is built.

Covers pickles torch's weights-only reader refuses (without its advice or warnings), config bombs for the
config-as-data reader, and architecture numbers out of range or not matching the tensors, in an mmdet
config or in our safetensors header.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from midog_viewer.cli import main
from midog_viewer.detect import load_model, model as model_module
from midog_viewer.detect.mmdet_import import read_mmdet_config
from midog_viewer.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]


class _Payload:
    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def __reduce__(self):
        return (os.system, (f"touch {self.victim}",))


@pytest.fixture
def slide(tmp_path) -> Path:
    path = tmp_path / "s.png"
    Image.new("RGB", (64, 64), (230, 200, 220)).save(path)
    return path


@pytest.fixture
def no_real_build(monkeypatch):
    """Fail the test if a Cascade R-CNN is built anywhere but on the meta device (which allocates nothing)."""
    original = model_module.CascadeRCNN.__init__

    def guarded(self, cfg):
        assert torch.get_default_device().type == "meta", "a model was built before the file was refused"
        original(self, cfg)

    monkeypatch.setattr(model_module.CascadeRCNN, "__init__", guarded)


def _refused(args: list[str], capsys) -> str:
    """Run the CLI in process: exit 2, one line on stderr, no warning raised by torch; the line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("midog-viewer: error: "), err
    assert "weights_only" not in err and "Traceback" not in err
    assert [str(w.message) for w in caught if "torch" in w.filename] == []
    return err.strip()


# ---------------------------------------------------------------------------------------- pickles (.pth)


def _write_pth(case: str, path: Path, victim: Path) -> None:
    if case == "code":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"x": _Payload(victim)}}, path)
    elif case == "protocol 4":  # harmless, but torch's reader cannot read it and warns about the protocol
        torch.save({"state_dict": {"w": torch.zeros(1)}}, path, pickle_protocol=4)
    elif case == "raw pickle":
        path.write_bytes(b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(100)}}, path)
        path.write_bytes(path.read_bytes()[:300])


PTH_CASES = {
    "code": "Python objects other than tensors (posix.system); midog-viewer loads weights only",
    "protocol 4": "its pickle uses the FRAME instruction, which the weights-only reader does not accept",
    "raw pickle": "not a checkpoint written by torch.save",
    "empty": "is empty",
    "truncated": "refusing to load",
}


@pytest.mark.parametrize("case", list(PTH_CASES))
def test_a_refused_pth_is_one_line_without_torchs_advice(case, slide, tmp_path, capsys, no_real_build):
    model, victim = tmp_path / "hostile.pth", tmp_path / "pwned"
    _write_pth(case, model, victim)
    err = _refused(["detect", str(slide), "--model", str(model), "--out", str(tmp_path / "o.json")], capsys)
    assert PTH_CASES[case] in err
    assert not victim.exists() and not (tmp_path / "o.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["code", "protocol 4"])
def test_the_cli_process_prints_exactly_one_line(case, slide, tmp_path):
    """As a user runs it: torch's warnings would reach stderr here, outside pytest's capture of them."""
    model, victim = tmp_path / "hostile.pth", tmp_path / "pwned"
    _write_pth(case, model, victim)
    done = subprocess.run(
        [sys.executable, "-m", "midog_viewer", "detect", str(slide), "--model", str(model), "--out",
         str(tmp_path / "o.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"midog-viewer: error: refusing to load {model}: ") and PTH_CASES[case] in lines[0]
    assert "Warning" not in done.stderr and "weights_only" not in done.stderr
    assert not victim.exists()


# ------------------------------------------------------------------------------------ config bombs


def _laughs(lines: int) -> str:
    text = "a0 = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    return text + "".join(f"a{i} = [{', '.join([f'a{i - 1}'] * 10)}]\n" for i in range(1, lines))


CONFIG_BOMBS = {
    "billion laughs": (_laughs(12), "builds over 100,000 values"),
    "squaring": ("b = 2\n" + "b = b * b\n" * 40, "an integer beyond 64 bits"),
    "big product": ("a = 4294967296 * 4294967296\n", "an integer beyond 64 bits"),
    "huge literal": ("a = " + "9" * 30 + "\n", "an integer beyond 64 bits"),
    "digits beyond python's limit": ("a = " + "9" * 5000 + "\n", "not valid Python"),
    "deep signs": ("a = " + "-" * 100_000 + "1\n", "nests"),
    "deep sum": ("a = 1" + "+1" * 100_000 + "\n", "nests"),
    "long sum": ("a = 1" + "+1" * 1_000 + "\n", "nests deeper than 32 levels"),
    "deep lists": ("a = " + "[" * 40 + "]" * 40 + "\n", "nests deeper than 32 levels"),
    "deep through names": ("a0 = [1]\n" + "".join(f"a{i} = [a{i - 1}]\n" for i in range(1, 40)),
                           "nests deeper than 32 levels"),
    "long list": ("a = [" + "0," * 110_000 + "]\n", "builds over 100,000 values"),
    "over 256 kB": ("a = 1\n" * 50_000, "is over 256 kB"),
    "unhashable key": ("a = {[1]: 2}\n", "a dict key that is a list or dict"),
    "null byte": ("a = 1\x00\n", "not valid Python"),
}


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("case", list(CONFIG_BOMBS))
def test_config_bombs_are_refused_early(case, tmp_path):
    text, message = CONFIG_BOMBS[case]
    path = tmp_path / "bomb.py"
    path.write_text(text)
    with pytest.raises(ModelError, match=re.escape(message)):
        read_mmdet_config(path)


def test_the_value_budget_leaves_real_configs_alone(shared_data):
    data = read_mmdet_config(shared_data / "mmdet_reference" / "cascade_r18_tiny.py")
    assert data["model"]["roi_head"]["bbox_head"][0]["fc_out_channels"] == 128
    assert read_mmdet_config("x", text=_laughs(4))["a3"][9][9][9] == [1] * 10  # 10,000 values are fine


# ------------------------------------------------------------------------ mmdet configs out of range


def _anchor_strides_zero(text: str) -> str:
    return re.sub(r"(anchor_generator=dict\((?:.|\n)*?strides=\[\s*)4,", r"\g<1>0,", text, count=1)


MMDET_CASES = {
    "fc_channels 4,000,000": (lambda t: t.replace("fc_out_channels=128", "fc_out_channels=4000000"),
                              "fc_channels must be an integer in 1..4096, not 4000000"),
    "negative channels": (lambda t: t.replace("out_channels=64", "out_channels=-64"),
                          "fpn_channels must be an integer in 1..1024, not -64"),
    "string channels": (lambda t: t.replace("out_channels=64", "out_channels='64'"), "where an integer belongs"),
    "float channels": (lambda t: t.replace("out_channels=64", "out_channels=64.5"), "where an integer belongs"),
    "class names 1, 2": (lambda t: t.replace("'mitotic figure',", "1,").replace("'hard negative',", "2,"),
                         "that are not a list of names"),
    "zero anchor stride": (_anchor_strides_zero, "anchor_strides must be an integer in 1..1024, not 0"),
}


@pytest.mark.parametrize("case", list(MMDET_CASES))
def test_mmdet_configs_out_of_range_are_refused_before_building(case, shared_data, slide, tmp_path, capsys,
                                                                no_real_build):
    folder = shared_data / "mmdet_reference"
    edit, message = MMDET_CASES[case]
    original = (folder / "cascade_r18_tiny.py").read_text()
    config = tmp_path / "cfg.py"
    config.write_text(edit(original))
    assert config.read_text() != original
    err = _refused(["detect", str(slide), "--model", str(folder / "cascade_r18_tiny.pth"), "--config", str(config),
                    "--out", str(tmp_path / "o.json")], capsys)
    assert message in err


def test_a_non_utf8_config_and_odd_metainfo_are_one_line(shared_data, slide, tmp_path, capsys):
    folder = shared_data / "mmdet_reference"
    config = tmp_path / "cfg.py"
    config.write_bytes((folder / "cascade_r18_tiny.py").read_bytes() + b"# caf\xe9\n")
    err = _refused(["detect", str(slide), "--model", str(folder / "cascade_r18_tiny.pth"), "--config", str(config),
                    "--out", str(tmp_path / "o.json")], capsys)
    assert "is not UTF-8 text" in err
    config.write_text((folder / "cascade_r18_tiny.py").read_text() + "metainfo = 5\n")
    with pytest.raises(ModelError, match="metainfo that is not a dict"):
        load_model(folder / "cascade_r18_tiny.pth", config)


# ------------------------------------------------------------------ our safetensors header out of range


def _with_header_config(path: Path, **changes) -> None:
    """Rewrite ``path`` with the same tensors and ``changes`` to the config JSON in its header."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    metadata["config"] = json.dumps({**json.loads(metadata["config"]), **changes})
    save_file(tensors, str(path), metadata=metadata)


HEADER_CASES = {
    "fc_channels 4,000,000": ({"fc_channels": 4_000_000}, "fc_channels must be an integer in 1..4096, not 4000000"),
    "fc_channels in range but not the tensors'": ({"fc_channels": 4096}, "wrong shapes: roi_heads.stages"),
    "string channels": ({"fpn_channels": "64"}, "fpn_channels must be an integer in 1..1024, not '64'"),
    "negative channels": ({"rpn_feat_channels": -1}, "rpn_feat_channels must be an integer in 1..1024, not -1"),
    "bool channels": ({"fc_channels": True}, "fc_channels must be an integer"),
    "class names 1, 2": ({"class_names": [1, 2]}, "class_names must be 1 to 100 non-empty names"),
    "zero anchor stride": ({"anchor_strides": [0, 8, 16, 32, 64]}, "anchor_strides must be an integer in 1..1024"),
    "nan pixel std": ({"pixel_std": [float("nan"), 1, 1]}, "pixel_std must be a number"),
    "scales not a list": ({"anchor_scales": 8}, "anchor_scales must be a list of 1 to 8 numbers"),
    "backbone a list": ({"backbone": ["resnet18"]}, "unsupported backbone"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_header_configs_out_of_range_are_refused_before_building(case, tiny_checkpoint, slide, tmp_path, capsys,
                                                                 no_real_build):
    changes, message = HEADER_CASES[case]
    _with_header_config(tiny_checkpoint, **changes)
    err = _refused(["detect", str(slide), "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o.json")], capsys)
    assert message in err


def test_a_deeply_nested_header_config_is_one_line(tiny_checkpoint):
    with safe_open(str(tiny_checkpoint), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    for nested in ('{"fc_channels": ' + "[" * 100_000 + "]" * 100_000 + "}",
                   '{"class_names": ' + "[" * 900 + "]" * 900 + "}"):
        save_file(tensors, str(tiny_checkpoint), metadata={**metadata, "config": nested})
        with pytest.raises(ModelError, match="nests too deeply|class_names must be"):
            load_model(tiny_checkpoint)


def test_an_oversized_safetensors_header_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "big.safetensors"
    path.write_bytes((64 << 20).to_bytes(8, "little") + b"{" + b" " * 100)
    with pytest.raises(ModelError, match="header would be over 16 MB"):
        load_model(path)
