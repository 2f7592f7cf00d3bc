"""What hostile model inputs cost before they are refused: time and peak RSS, each case in its own process.

Config bombs for the config-as-data reader (a "billion laughs" of nested lists, ``b = b * b`` squared 40
times, deep nesting, a long list, a 1.2 MB file) and checkpoints whose safetensors header asks for a huge model
(``fc_channels = 4000000``, about 50 GB of weights before issue 10). Baselines from the same run: reading a
normal mmdet config and loading a normal (tiny) checkpoint, plus a process that only imports the package.
Each case runs in a fresh subprocess so its peak RSS is its own; ratios are against the matching baseline.

    python benchmarks/hostile_inputs.py [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure the checkout this file is in, not whichever one is installed
REFERENCE = ROOT.parent / "shared" / "data" / "mmdet_reference"
#: A case not refused by then is reported as such (the bombs ran for minutes before issue 10).
CHILD_TIMEOUT_S = 120


def _laughs(lines: int) -> str:
    text = "a0 = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    return text + "".join(f"a{i} = [{', '.join([f'a{i - 1}'] * 10)}]\n" for i in range(1, lines))


def _normal_config() -> str:
    """The reference mmdet config when ../shared is there, else a flat config of the same size and shape."""
    if (REFERENCE / "cascade_r18_tiny.py").is_file():
        return (REFERENCE / "cascade_r18_tiny.py").read_text()
    stage = "dict(type='Shared2FCBBoxHead', fc_out_channels=1024, num_classes=2, bbox_coder=dict(" \
            "target_stds=[0.1, 0.1, 0.2, 0.2], target_means=[0.0, 0.0, 0.0, 0.0]))"
    return "".join(f"part{i} = dict(a=[{stage}, {stage}, {stage}], b=dict(x=1, y=[1, 2, 3]))\n" for i in range(40))


CONFIGS = {
    "config: normal (baseline)": _normal_config(),
    "config: billion laughs, 12 lines": _laughs(12),
    "config: b = b * b, 40 times": "b = 2\n" + "b = b * b\n" * 40,
    "config: 100,000 nested signs": "a = " + "-" * 100_000 + "1\n",
    "config: a sum of 100,000 terms": "a = 1" + "+1" * 100_000 + "\n",
    "config: 40 names nested in each other": "a0 = [1]\n" + "".join(f"a{i} = [a{i - 1}]\n" for i in range(1, 40)),
    "config: a list of 110,000 zeros (220 kB)": "a = [" + "0," * 110_000 + "]\n",
    "config: 1.2 MB of assignments": "a = 1\n" * 200_000,
}
CHECKPOINTS = {
    "checkpoint: normal tiny model (baseline)": None,
    "checkpoint: header fc_channels 4,000,000": {"fc_channels": 4_000_000},
    "checkpoint: header fc_channels 4096, tensors for 128": {"fc_channels": 4096},
    "checkpoint: header fpn_channels 1024, tensors for 64": {"fpn_channels": 1024, "rpn_feat_channels": 1024},
}


def _child(kind: str, path: str) -> None:
    """Run one case in this (fresh) process and print what happened as JSON."""
    import torch

    torch.set_num_threads(1)
    from midog_viewer.detect import load_model
    from midog_viewer.detect.mmdet_import import read_mmdet_config
    from midog_viewer.errors import MidogError

    start, cpu_start = time.perf_counter(), time.process_time()
    refused = None
    try:
        if kind == "config":
            read_mmdet_config(path)
        elif kind == "checkpoint":
            load_model(path)
    except MidogError as exc:
        refused = str(exc)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    print(json.dumps({"seconds": seconds, "cpu": cpu, "refused": refused, "peak_rss_kb": peak_kb}))


def _run(kind: str, path: Path) -> dict:
    """Time and peak RSS of one child process (its own getrusage high-water mark)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        out, err = process.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return _unfinished(CHILD_TIMEOUT_S, f"NOT REFUSED: still running after {CHILD_TIMEOUT_S} s")
    wall = time.perf_counter() - start
    if process.returncode != 0:
        lines = err.decode().strip().splitlines() or ["(no message)"]
        return _unfinished(wall, f"CRASHED (exit {process.returncode}): {lines[-1]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "load_s": round(result["seconds"], 3), "load_cpu_s": round(result["cpu"], 3),
            "peak_rss_mb": round(result["peak_rss_kb"] / 1024, 1), "refused": result["refused"]}


def _unfinished(wall: float, what: str) -> dict:
    nan = float("nan")
    return {"wall_s": round(wall, 2), "load_s": nan, "load_cpu_s": nan, "peak_rss_mb": nan, "refused": what}


def _checkpoints(folder: Path) -> dict[str, Path]:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from midog_viewer.detect import CascadeConfig, build_cascade_rcnn, save_checkpoint

    torch.manual_seed(0)
    cfg = CascadeConfig.named("tiny")
    normal = save_checkpoint(build_cascade_rcnn(cfg), folder / "normal.safetensors", cfg, {"purpose": "benchmark"})
    with safe_open(str(normal), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    paths = {}
    for index, (name, changes) in enumerate(CHECKPOINTS.items()):
        if changes is None:
            paths[name] = normal
            continue
        path = folder / f"hostile_{index}.safetensors"
        save_file(tensors, str(path), metadata={**metadata, "config": json.dumps({**json.loads(metadata["config"]),
                                                                                   **changes})})
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "empty.py").write_text("")
        rows["import only (floor)"] = _run("import", folder / "empty.py")
        for index, (name, text) in enumerate(CONFIGS.items()):
            path = folder / f"config_{index}.py"
            path.write_text(text)
            rows[name] = _run("config", path)
        for name, path in _checkpoints(folder).items():
            rows[name] = _run("checkpoint", path)
    for name, row in rows.items():
        base = rows["config: normal (baseline)" if name.startswith("config") else
                    "checkpoint: normal tiny model (baseline)" if name.startswith("checkpoint") else name]
        row["rss_ratio"] = round(row["peak_rss_mb"] / base["peak_rss_mb"], 2)
        row["load_time_ratio"] = round(row["load_s"] / max(base["load_s"], 1e-6), 2)
        row["rss_above_import_mb"] = round(row["peak_rss_mb"] - rows["import only (floor)"]["peak_rss_mb"], 1)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("load s / cpu s: wall and CPU time of the load/read call alone (CPU time is what a busy machine does not")
    print("inflate); wall s: the whole process, import of torch included;")
    print("peak RSS: the process's high-water mark; + import: above a process that only imports the package.")
    print(f"{'case':54} {'load s':>7} {'cpu s':>6} {'x base':>7} {'wall s':>7} {'peak RSS MB':>11} {'x base':>7} "
          f"{'+ import':>8}  refused with")
    for name, row in rows.items():
        message = (row["refused"] or "-  (loaded)")
        print(f"{name:54} {row['load_s']:7.3f} {row['load_cpu_s']:6.3f} {row['load_time_ratio']:7.2f} "
              f"{row['wall_s']:7.1f} "
              f"{row['peak_rss_mb']:11.1f} {row['rss_ratio']:7.2f} {row['rss_above_import_mb']:8.1f}  {message[:100]}")


if __name__ == "__main__":
    main()
