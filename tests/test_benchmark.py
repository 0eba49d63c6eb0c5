"""The epoch-time benchmark runs end to end on a tiny ImageFolder tree.

Only the shape of the output is checked: timings are printed, never asserted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "epoch_time.py"


def _write_image_folder(root: Path) -> Path:
    """Write 2 classes of 8x8 PNGs: 12 per class for train and 6 for test."""
    generator = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 12), ("test", 6)):
        for label, name in enumerate(("cats", "dogs")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = torch.randint(0, 256, (8, 8, 3), generator=generator)
                pixels[..., label] = 255  # a class signal in one channel
                image = Image.fromarray(pixels.to(torch.uint8).numpy(), "RGB")
                image.save(folder / f"{index}.png")
    return root


def _load_script():
    spec = importlib.util.spec_from_file_location("epoch_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file runs
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_prints_speedup_last(tmp_path):
    data = _write_image_folder(tmp_path / "images")
    # One thread keeps the run quick when other processes share the cores, and
    # batches of 8 make 3 per epoch, so the loader restarts its workers less.
    command = [sys.executable, str(SCRIPT), "--data", str(data), "--steps", "3"]
    command += ["--blocks", "2", "--warmup", "1", "--memory-steps", "1"]
    command += ["--threads", "1", "--width", "32", "--batch-size", "8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup: \d+\.\d\d", lines[-1]), result.stdout
    text = result.stdout
    for expected in (
        "cached dataset load:",
        "matmul peak",
        "reference ",
        "blocksearch ",
        "metrics collection:",
        "RSS after epoch 1 -> 3",
    ):
        assert expected in text, text
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("layout", ["missing", "no-splits"])
def test_benchmark_bad_data_one_line(tmp_path, capsys, layout):
    folder = tmp_path / "data"
    if layout == "no-splits":
        folder.mkdir()
    code = _load_script().main(["--data", str(folder), "--steps", "1"])
    assert code != 0
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1
    assert "speedup" not in captured.out


def test_step_flops_counts_matmuls():
    from blocksearch.builder import ResidualMLP

    epoch_time = _load_script()
    model = ResidualMLP("linear + id", depth=2, width=4, in_features=6, num_classes=3)
    batch = 5
    # stem 6->4 forward and weight gradient only; two blocks 4->4 and the
    # head 4->3 also need an input gradient
    expected = 2 * batch * (2 * 6 * 4 + 3 * (4 * 4 * 2 + 4 * 3))
    assert epoch_time.step_flops(model, batch) == expected


PARALLEL = SCRIPT.with_name("parallel_trials.py")


def test_parallel_trials_prints_rates(tmp_path):
    result = subprocess.run(
        [sys.executable, str(PARALLEL), "--data", "synthetic:500", "--blocks", "2"]
        + ["--width", "16", "--workers", "1,2", "--cores", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BLOCKSEARCH_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"K=2: torch threads per process 1, wall [\d.]+ s, .*", lines[3]
    )
    assert re.fullmatch(r"trial-epochs per hour, K=1: \d+, 1\.00x K=1", lines[-2])
    assert re.fullmatch(r"trial-epochs per hour, K=2: \d+, [\d.]+x K=1", lines[-1])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--workers", "0"], 2, "'0' must be 1 or more"),
        (["--workers", ","], 2, "names no worker count"),
        (["--data", "no-such-folder"], 4, "does not exist"),
    ],
)
def test_parallel_trials_bad_input(args, code, message):
    result = subprocess.run(
        [sys.executable, str(PARALLEL), "--data", "synthetic", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
