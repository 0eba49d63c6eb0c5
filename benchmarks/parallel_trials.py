"""Trial-epochs per hour with K trials training side by side.

``blocksearch run --workers K`` trains K trials at once, in K processes that
divide the CPU cores between them (``cores // K`` torch threads each). This
script measures what that buys: for each K it starts K processes, each
trains the control preset for ``--epochs`` epochs with blocksearch's trainer
on the same data, and it times them from a common start to the last finish.
The figure is K * epochs / wall time, in trial-epochs per hour, and each K
is printed beside its ratio to K = 1, measured in the same run.

Usage::

    python benchmarks/parallel_trials.py --data /path/to/cifar10-jpeg \\
        --blocks 20 --workers 1,2

Errors in the arguments or the data end with one ``error:`` line on stderr
and a non-zero exit code (2 for options, 4 for data, 1 otherwise).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import sys
import time

from blocksearch.errors import BlocksearchError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [_positive_int(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {error}; give worker counts such as 1,2"
        ) from None
    if not counts:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no worker count; give counts such as 1,2"
        )
    return counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        required=True,
        help="dataset source, as for blocksearch run --data: a folder in "
        "ImageFolder layout, one with cifar-10-batches-py, or synthetic[:N]",
    )
    parser.add_argument(
        "--blocks", type=_positive_int, default=20, help="residual blocks (20)"
    )
    parser.add_argument(
        "--width", type=_positive_int, default=256, help="features per block (256)"
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=1,
        help="epochs each process trains, over the whole train split (1)",
    )
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1, 2],
        help="comma-separated numbers of processes to compare, e.g. 1,2 (1,2)",
    )
    parser.add_argument(
        "--cores",
        type=_positive_int,
        help="cores to divide among the processes (default: those this "
        "process may run on)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="device every process trains on: cpu, cuda, cuda:N or auto (cpu)",
    )
    return parser.parse_args(argv)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _train(args: argparse.Namespace, threads: int, start, results) -> None:
    """Body of one process: load, wait for the others, train, report seconds."""
    import torch

    from blocksearch.builder import ResidualMLP
    from blocksearch.data import load_dataset
    from blocksearch.presets import PRESETS
    from blocksearch.train import TrainConfig, resolve_device, seed_everything, train

    torch.set_num_threads(threads)
    device = resolve_device(args.device)
    data = load_dataset(args.data).to(device)
    seed_everything(42)
    model = ResidualMLP(
        PRESETS["control"],
        depth=args.blocks,
        width=args.width,
        in_features=data.in_features,
        num_classes=data.num_classes,
    )
    config = TrainConfig(epochs=args.epochs)
    start.wait()
    began = time.perf_counter()
    for _ in train(model, data, config, device):
        pass
    results.put(time.perf_counter() - began)


def measure(args: argparse.Namespace, workers: int, cores: int) -> float:
    """Return the wall seconds from a common start until all ``workers`` end."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers + 1)
    results = context.Queue()
    threads = max(1, cores // workers)
    processes = [
        context.Process(target=_train, args=(args, threads, start, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()

    # timed: from the moment every process has its data until the last result
    start.wait(timeout=600)
    began = time.perf_counter()
    per_process = []
    while len(per_process) < workers:
        try:
            per_process.append(results.get(timeout=1))
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode]
            if failed:
                raise BlocksearchError(
                    f"a training process exited with code {failed[0]}; its "
                    "error is printed above"
                ) from None
    wall = time.perf_counter() - began
    for process in processes:
        process.join()

    print(
        f"K={workers}: torch threads per process {threads}, wall {wall:.1f} s, "
        "per process " + ", ".join(f"{t:.1f} s" for t in sorted(per_process))
    )
    return wall


def run(args: argparse.Namespace) -> None:
    import torch

    from blocksearch.data import load_dataset

    cores = args.cores or _available_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {cores} cores used of {os.cpu_count()}, torch {torch.__version__}, "
        f"device {args.device}, load average {load:.2f}"
    )
    data = load_dataset(args.data)  # fills the cache before the timed runs
    print(
        f"trial: control preset, {args.blocks} blocks of width {args.width}, "
        f"{args.epochs} epochs of {len(data.train_labels)} images"
    )
    rates = {}
    for workers in args.workers:
        wall = measure(args, workers, cores)
        rates[workers] = workers * args.epochs / wall * 3600
    baseline = rates.get(1)
    for workers, rate in rates.items():
        ratio = f", {rate / baseline:.2f}x K=1" if baseline else ""
        print(f"trial-epochs per hour, K={workers}: {rate:.0f}{ratio}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BlocksearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
