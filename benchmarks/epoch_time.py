"""Time one training step of the reference pipeline against blocksearch's trainer.

Both run in this process, on the same ImageFolder data, the same network (the
control preset, tanh, width 256 by default) and the same seed:

- reference: the way the published experiment trains. A torchvision
  ImageFolder transform turns each image into a tensor, normalizes it with
  mean 0.5 and std 0.5 and flattens it. A DataLoader shuffles and batches
  with 2 worker processes. Adam and ``clip_grad_norm_`` run with their
  defaults. Every step calls ``retain_grad()`` on every block output, and the
  retained tensors stay in a list until the end of the epoch reads them.
- blocksearch: :func:`blocksearch.train.train`'s own step function on the
  cached dataset, which stays resident on the device.

Only steady-state steps are timed: ``--warmup`` steps run first and are not
counted, and the timed steps are split into chunks whose median is reported.
The last line of the output is ``speedup: X.XX``, the reference's time per
step divided by blocksearch's. Other processes on the same cores distort both
figures, and blocksearch's more: its steps are short parallel regions that
wait whenever one of their threads loses its core. The first output line
shows the 1-minute load average, which should be well below 1 for a
measurement worth recording.

Usage::

    python benchmarks/epoch_time.py --data /path/to/cifar10-jpeg --blocks 20 \\
        --steps 200

Errors in the arguments or the data end with one ``error:`` line on stderr
and a non-zero exit code (2 for options, 4 for data, 1 otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.utils.data
from torch import Tensor, nn

from blocksearch.builder import ResidualMLP
from blocksearch.data import Dataset, load_dataset
from blocksearch.errors import BlocksearchError, DataError
from blocksearch.presets import PRESETS
from blocksearch.train import (
    TrainConfig,
    _TrainingRun,
    resolve_device,
    seed_everything,
    train,
)

MIB = 1024 * 1024
# Timed steps are split into this many chunks, and the median chunk is reported.
_CHUNKS = 10
# Untimed steps at the start of every chunk; more than the 4 batches that the
# reference's 2 loader workers prefetch (2 each, DataLoader's default).
_REWARM_STEPS = 5


# --- Command line ---------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """Argument parser whose errors are one line, like the rest of the script."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _OneLineParser(
        description="Time training steps of the reference pipeline and of "
        "blocksearch's trainer on the same data, model and seed.",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="ImageFolder dataset folder with train/<class>/* and test/<class>/*",
    )
    parser.add_argument(
        "--blocks", type=_positive_int, default=20, help="residual blocks (20)"
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=100,
        help="timed steps per pipeline, after the warm-up (100)",
    )
    parser.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=10,
        help="untimed steps that run first in each pipeline (10)",
    )
    parser.add_argument(
        "--device", default="cpu", help="auto, cpu, cuda or cuda:N (cpu)"
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's own choice)",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=128, help="batch size (128)"
    )
    parser.add_argument(
        "--width", type=_positive_int, default=256, help="network width (256)"
    )
    parser.add_argument(
        "--workers",
        type=_non_negative_int,
        default=2,
        help="DataLoader worker processes of the reference pipeline (2)",
    )
    parser.add_argument(
        "--memory-steps",
        type=_positive_int,
        default=20,
        help="steps per epoch of the 3-epoch memory comparison (20)",
    )
    parser.add_argument(
        "--grad-norm-every",
        type=_positive_int,
        default=1,
        help="TrainConfig.grad_norm_every of every blocksearch run: gather block "
        "gradient norms on every k-th step (1, the reference protocol)",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed (42)")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time blocksearch with autocast_bf16=True (inexact)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time blocksearch with compile=True (inexact; compiles first)",
    )
    return parser.parse_args(argv)


# --- Measurement helpers --------------------------------------------------------


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM, Linux 4.0 and later).

    Returns False where that fails, and the peak then counts from the start
    of the process.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    """Peak RSS since the last reset (VmHWM), else since the process began."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class _Phase:
    """Peak memory of one part of the benchmark, over one or more spans.

    ``peak_rss`` is the highest peak of all spans, and the growth shown by
    :meth:`describe` counts from the RSS at the start of the first span.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_rss = 0
        self.start_rss: int | None = None
        self.cuda_peak: int | None = None
        self.peak_is_per_phase = True

    @contextmanager
    def measure(self) -> Iterator[_Phase]:
        gc.collect()
        if self.start_rss is None:
            self.start_rss = _rss_bytes()
        self.peak_is_per_phase &= _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        yield self
        self.peak_rss = max(self.peak_rss, _peak_rss_bytes())
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            self.cuda_peak = max(self.cuda_peak or 0, peak)

    def describe(self, growth: bool = True) -> str:
        """Peak RSS (and CUDA peak) as text; ``growth`` adds the rise above
        the RSS at the start of the first span."""
        text = f"peak RSS {self.peak_rss / MIB:.0f} MiB"
        if not self.peak_is_per_phase:
            text += " (since the process began)"
        elif growth:
            rise = max(0, self.peak_rss - (self.start_rss or 0)) / MIB
            text += f" (+{rise:.0f} MiB in phase)"
        if self.cuda_peak is not None:
            text += f", CUDA max allocated {self.cuda_peak / MIB:.0f} MiB"
        return text


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(model: ResidualMLP, batch: int) -> int:
    """Floating-point operations of the matrix products in one training step.

    Each linear layer costs ``2 * batch * in * out`` forward, the same again
    for its weight gradient and the same for its input gradient, except the
    stem's first layer, whose input (the images) needs no gradient.
    """
    first = model.stem[0]
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            product = 2 * batch * module.in_features * module.out_features
            total += product * (2 if module is first else 3)
    return total


def matmul_peak(model: ResidualMLP, batch: int, device: torch.device) -> float:
    """Measure float32 matrix-multiply throughput (FLOP/s) on the step's shapes.

    Times ``(batch, width) @ (width, width)`` and ``(batch, in) @ (in, width)``
    and returns the faster rate.
    """
    width = model.head.in_features
    shapes = [(batch, width, width), (batch, model.stem[0].in_features, width)]
    best = 0.0
    for rows, inner, cols in shapes:
        a = torch.randn(rows, inner, device=device)
        b = torch.randn(inner, cols, device=device)
        flops = 2 * rows * inner * cols
        for _ in range(5):
            a @ b
        # repeat enough products to fill about 50 ms per sample
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        single = max(time.perf_counter() - started, 1e-6)
        repeats = max(1, min(10_000, int(0.05 / single)))
        for _ in range(5):
            _sync(device)
            started = time.perf_counter()
            for _ in range(repeats):
                a @ b
            _sync(device)
            elapsed = time.perf_counter() - started
            best = max(best, flops * repeats / elapsed)
    return best


def _build_model(args: argparse.Namespace, data: Dataset) -> ResidualMLP:
    seed_everything(args.seed)
    return ResidualMLP(
        PRESETS["control"],
        depth=args.blocks,
        width=args.width,
        in_features=data.in_features,
        num_classes=data.num_classes,
        activation="tanh",
    )


def _cycle(make_epoch: Callable[[], Iterator]) -> Iterator:
    """Yield the items of ``make_epoch()`` forever, starting a new epoch each time."""
    while True:
        empty = True
        for item in make_epoch():
            empty = False
            yield item
        if empty:
            return


# --- The reference pipeline ---------------------------------------------------


class ReferencePipeline:
    """The conventional training loop the published experiment uses.

    Args:
        model: Network, moved to ``device``.
        root: Dataset folder with ``train/`` in ImageFolder layout.
        args: Parsed options (batch size, workers, seed).
        device: Training device; batches are copied to it every step.
        subset: Training sample indices to use instead of the whole split.
    """

    def __init__(
        self,
        model: ResidualMLP,
        root: Path,
        args: argparse.Namespace,
        device: torch.device,
        subset: list[int] | None = None,
    ) -> None:
        import torchvision.datasets
        import torchvision.transforms as transforms

        transform = transforms.Compose(
            [
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                transforms.Lambda(torch.flatten),
            ]
        )
        dataset: torch.utils.data.Dataset = torchvision.datasets.ImageFolder(
            str(root / "train"), transform=transform
        )
        if subset is not None:
            dataset = torch.utils.data.Subset(dataset, subset)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
        )
        self.model = model.to(device)
        self.device = device
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=1e-3, weight_decay=1e-4
        )
        self.criterion = nn.CrossEntropyLoss()
        self.retained: list[list[Tensor]] = []  # per step, every block output
        self._step_outputs: list[Tensor] = []
        for block in model.blocks:
            block.register_forward_hook(self._retain)

    def _retain(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if output.requires_grad:
            output.retain_grad()
            self._step_outputs.append(output)

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of endless epochs; each epoch starts new worker processes."""
        return _cycle(lambda: iter(self.loader))

    def step(self, images: Tensor, labels: Tensor) -> float:
        images, labels = images.to(self.device), labels.to(self.device)
        self._step_outputs = []
        loss = self.criterion(self.model(images), labels)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.retained.append(self._step_outputs)
        return loss.item() * labels.size(0)

    def end_epoch(self) -> list[float]:
        """Read the retained gradients: mean norm per block; clears the list."""
        depth = self.model.depth
        sums = [0.0] * depth
        for outputs in self.retained:
            for index, output in enumerate(outputs):
                sums[index] += output.grad.norm().item()
        count = max(1, len(self.retained))
        self.retained = []
        return [total / count for total in sums]

    def epoch(self) -> float:
        """Run one full epoch over the loader; return the mean training loss."""
        self.model.train()
        total = 0.0
        seen = 0
        for images, labels in self.loader:
            total += self.step(images, labels)
            seen += labels.size(0)
        self.end_epoch()
        return total / max(1, seen)


@dataclasses.dataclass
class _Timed:
    """One pipeline of the interleaved timing: its step and its chunk times."""

    name: str
    step: Callable[[], object]
    phase: _Phase
    seconds: list[float] = dataclasses.field(default_factory=list)

    def seconds_per_step(self) -> float:
        """Median over the chunks of the mean seconds per step."""
        return statistics.median(self.seconds)


def time_interleaved(pipelines: list[_Timed], steps: int, device: torch.device) -> None:
    """Time ``steps`` steps of every pipeline, in round-robin chunks.

    Each round runs one chunk of each pipeline in turn, so a slow spell of
    the machine slows all of them alike, and the median chunk of each is its
    figure. Every chunk starts with untimed steps. They use up the batches
    that the reference's loader workers prefetched while other pipelines ran,
    and they give those workers time to finish and go idle before the next
    pipeline's chunk is timed.
    """
    per_chunk = max(1, steps // _CHUNKS)
    for _ in range(min(_CHUNKS, steps)):
        for pipeline in pipelines:
            with pipeline.phase.measure():
                for _ in range(_REWARM_STEPS):
                    pipeline.step()
                _sync(device)
                started = time.perf_counter()
                for _ in range(per_chunk):
                    pipeline.step()
                _sync(device)
                pipeline.seconds.append((time.perf_counter() - started) / per_chunk)


def _run_indices(run: _TrainingRun, batch: int) -> Iterator[Tensor]:
    def epoch() -> Iterator[Tensor]:
        order = run.begin_epoch()
        for start in range(0, len(order), batch):
            yield order[start : start + batch]

    return _cycle(epoch)


def _blocksearch_step(
    run: _TrainingRun, indices: Iterator[Tensor], grad_norms: bool
) -> Callable[[], None]:
    def step() -> None:
        run.track_grad_norms = grad_norms
        run.step(next(indices))

    return step


def _median_seconds(action: Callable[[], object], repeats: int, device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        action()
        _sync(device)
        times.append(time.perf_counter() - started)
    times.sort()
    return times[len(times) // 2]


# --- Memory across epochs -----------------------------------------------------


def _subset(data: Dataset, indices: Tensor) -> Dataset:
    return dataclasses.replace(
        data,
        train_images=data.train_images[indices],
        train_labels=data.train_labels[indices],
    )


def memory_across_epochs(
    args: argparse.Namespace, data: Dataset, device: torch.device
) -> dict[str, tuple[list[int], _Phase]]:
    """Measure RSS after each of 3 epochs of ``--memory-steps`` steps.

    Both pipelines train on the same random subset of the training split.
    blocksearch runs first, through its public :func:`train` generator, which
    also evaluates on the whole test split after every epoch. The reference
    runs second, so the memory blocksearch freed is all it can reuse, and its
    retained tensors show in its peak.

    Returns:
        Per pipeline name, the RSS in bytes after epochs 1, 2 and 3, and the
        memory phase that spans the 3 epochs.
    """
    count = min(len(data.train_images), args.memory_steps * args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    indices = torch.randperm(len(data.train_images), generator=generator)[:count]
    result: dict[str, tuple[list[int], _Phase]] = {}

    blocksearch_rss: list[int] = []
    config = TrainConfig(
        epochs=3,
        batch_size=args.batch_size,
        seed=args.seed,
        grad_norm_every=args.grad_norm_every,
    )
    with _Phase(device).measure() as blocksearch_phase:
        model = _build_model(args, data)
        for _ in train(model, _subset(data, indices), config, device):
            blocksearch_rss.append(_rss_bytes())
    result["blocksearch"] = (blocksearch_rss, blocksearch_phase)

    reference_rss: list[int] = []
    with _Phase(device).measure() as reference_phase:
        pipeline = ReferencePipeline(
            _build_model(args, data),
            Path(args.data),
            args,
            device,
            subset=indices.tolist(),
        )
        for _ in range(3):
            pipeline.epoch()
            reference_rss.append(_rss_bytes())
        del pipeline
    result["reference"] = (reference_rss, reference_phase)
    return result


# --- Main ---------------------------------------------------------------------


def _growth(values: list[int]) -> str:
    first, last = values[0], values[-1]
    return (
        f"{first / MIB:.0f} -> {last / MIB:.0f} MiB "
        f"({(last - first) / max(1, first):+.1%})"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _report_step(
    name: str, seconds: float, flops: int, peak: float, phase: _Phase
) -> None:
    rate = flops / seconds
    # The pipelines' chunks alternate, so the peak RSS during a pipeline's
    # chunks also counts memory that the other pipelines still keep.
    print(
        f"{name:<25} {seconds * 1e3:7.2f} ms/step {rate / 1e9:6.1f} GFLOP/s "
        f"({rate / peak:4.0%} of peak), {phase.describe(growth=False)}"
    )


def time_pipelines(
    args: argparse.Namespace,
    data: Dataset,
    device: torch.device,
    flops: int,
    peak: float,
) -> float:
    """Time every pipeline, print its figures and return the exact speedup.

    ``flops`` is the matmul work of one step and ``peak`` the measured matmul
    rate in FLOP/s, both for the printed GFLOP/s.
    """
    # pipelines: the reference, blocksearch with and without gathering block
    # gradient norms (one run), and one run per requested inexact option
    reference = ReferencePipeline(
        _build_model(args, data), Path(args.data), args, device
    )
    reference.model.train()
    batches = reference.batches()
    timed = [
        _Timed("reference", lambda: reference.step(*next(batches)), _Phase(device))
    ]
    config = TrainConfig(
        batch_size=args.batch_size,
        seed=args.seed,
        grad_norm_every=args.grad_norm_every,
    )
    runs: dict[str, _TrainingRun] = {}
    for label, flags in _variants(args):
        phase = _Phase(device)
        with phase.measure():
            run = _TrainingRun(
                _build_model(args, data),
                data,
                dataclasses.replace(config, **flags),
                device,
            )
        runs[label] = run
        indices = _run_indices(run, args.batch_size)
        timed.append(_Timed(label, _blocksearch_step(run, indices, True), phase))
        if label == "blocksearch":
            # the same run, not gathering norms: the difference is their cost
            step = _blocksearch_step(run, indices, False)
            timed.append(_Timed("no grad norms", step, _Phase(device)))

    # warm-up (and compilation), then the interleaved timing
    for pipeline in timed:
        with pipeline.phase.measure():
            for _ in range(args.warmup):
                pipeline.step()
    time_interleaved(timed, args.steps, device)
    reference.end_epoch()
    # closing the generator shuts the loader's worker processes down
    batches.close()

    by_name = {pipeline.name: pipeline for pipeline in timed}
    reference_seconds = by_name["reference"].seconds_per_step()
    seconds = by_name["blocksearch"].seconds_per_step()
    # Chunks with and without gathering alternate, so each pair ran close in
    # time; the median of the pairwise differences cancels slow drifts.
    on_off = zip(
        by_name["blocksearch"].seconds, by_name["no grad norms"].seconds, strict=True
    )
    hook_seconds = statistics.median([on - off for on, off in on_off])
    for pipeline in timed:
        if pipeline.name != "no grad norms":
            _report_step(
                pipeline.name, pipeline.seconds_per_step(), flops, peak, pipeline.phase
            )

    # metrics collection, projected onto one full epoch of the whole dataset
    run = runs["blocksearch"]
    evaluation = _median_seconds(run.test_accuracy, 3, device)
    probe = _median_seconds(run.dead_rate, 5, device)
    steps_per_epoch = math.ceil(len(data.train_images) / args.batch_size)
    hooks = max(0.0, hook_seconds)
    epoch_seconds = steps_per_epoch * seconds + evaluation + probe
    metrics_seconds = steps_per_epoch * hooks + evaluation + probe
    print(
        f"metrics collection: grad norms {hooks * 1e3:.2f} ms/step "
        f"(measured {hook_seconds * 1e3:+.2f}), dead-neuron probe "
        f"{probe * 1e3:.1f} ms, test evaluation {evaluation * 1e3:.0f} ms "
        f"= {metrics_seconds / epoch_seconds:.1%} of a {steps_per_epoch}-step "
        f"epoch ({epoch_seconds:.1f} s)"
    )
    for label, run in runs.items():
        run.close()
        if label != "blocksearch":
            speedup = reference_seconds / by_name[label].seconds_per_step()
            print(f"{label} speedup: {speedup:.2f}")
    if args.compile and args.grad_norm_every == 1:
        print(
            "note: with --grad-norm-every 1 every step gathers gradient norms "
            "and so runs eagerly; compile only speeds up the other steps"
        )
    return reference_seconds / seconds


def _variants(args: argparse.Namespace) -> list[tuple[str, dict[str, bool]]]:
    """Name and TrainConfig flags of each blocksearch run to time.

    The exact trainer always runs. Each requested inexact option runs alone
    and, when both are requested, the two run together as well.
    """
    variants: list[tuple[str, dict[str, bool]]] = [("blocksearch", {})]
    if args.bf16:
        variants.append(("blocksearch bf16", {"autocast_bf16": True}))
    if args.compile:
        variants.append(("blocksearch compile", {"compile": True}))
    if args.bf16 and args.compile:
        flags = {"autocast_bf16": True, "compile": True}
        variants.append(("blocksearch bf16+compile", flags))
    return variants


def run_benchmark(args: argparse.Namespace) -> float:
    """Run every measurement, print the report and return the speedup."""
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data).expanduser()
    if not root.is_dir():
        raise DataError(
            f"the data folder {args.data!r} does not exist; pass --data with a "
            "folder that contains train/<class>/* and test/<class>/*"
        )
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(
            f"the data folder {args.data!r} needs train/ and test/ subfolders "
            "in ImageFolder layout (train/<class>/<image>)"
        )
    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), torch {torch.__version__}, "
        f"threads: {torch.get_num_threads()}, device {device}, "
        f"1-min load {loadavg:.2f}"
    )

    # dataset: the first call may decode and cache; the second reads the cache
    load_dataset(str(root))
    started = time.perf_counter()
    data = load_dataset(str(root))
    load_seconds = time.perf_counter() - started
    print(
        f"cached dataset load: {load_seconds:.2f} s "
        f"({len(data.train_images)} train, {len(data.test_images)} test images)"
    )

    probe_model = _build_model(args, data)
    flops = step_flops(probe_model, args.batch_size)
    print(
        f"model: control preset, tanh, width {args.width}, {args.blocks} blocks, "
        f"batch {args.batch_size}; {flops / 1e9:.3f} GFLOP of matmul per step"
    )
    peak = matmul_peak(probe_model, args.batch_size, device)
    del probe_model
    print(f"matmul peak (float32, step shapes): {peak / 1e9:.1f} GFLOP/s")
    # memory first, while the heap is fresh
    memory = memory_across_epochs(args, data, device)
    print(f"RSS after epoch 1 -> 3 ({args.memory_steps} steps per epoch):")
    for name, (values, memory_phase) in memory.items():
        print(f"  {name:<12} {_growth(values)}, {memory_phase.describe()}")

    print(
        f"timing {args.steps} steps per pipeline after {args.warmup} warm-up steps; "
        f"blocksearch gathers block gradient norms every {args.grad_norm_every} "
        "step(s)"
    )
    return time_pipelines(args, data, device, flops, peak)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        speedup = run_benchmark(args)
    except BlocksearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except (OSError, RuntimeError) as error:
        # torch's messages can span lines; the first one names the problem
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"error: {type(error).__name__}: {first_line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"speedup: {speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
