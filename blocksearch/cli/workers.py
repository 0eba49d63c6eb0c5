"""``run --workers K``: K worker processes on one study storage.

Each worker is a separate process that loads the space and the data itself
and runs :func:`blocksearch.study.run_space` against the shared storage. The
study lock there keeps their trials apart. The parent process relays the
workers' log lines, draws one progress bar per study from the storage, and
passes Ctrl-C and SIGTERM on.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing
import os
import signal
import time

import optuna
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from blocksearch.objective import StudyPlan
from blocksearch.study import COUNTED_STATES, study_name

logger = logging.getLogger("blocksearch")

#: Seconds between two looks at the storage for the progress bars.
POLL_SECONDS = 2.0


def run_workers(
    args: argparse.Namespace,
    plans: list[StudyPlan],
    storage: optuna.storages.BaseStorage,
    threads: int,
    console: Console,
) -> int:
    """Start ``args.workers`` worker processes and wait for all of them.

    Returns:
        0 when every study is full; otherwise the exit code of the first
        worker that failed (130 after Ctrl-C, 143 after SIGTERM).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    handler = RichHandler(console=console, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    logger.info("starting %d workers with %d torch threads each", args.workers, threads)
    workers = [
        context.Process(
            target=worker_main,
            args=(args, index, threads, queue, plans[0].presets, plans[0].designs),
            name=f"blocksearch-worker-{index}",
        )
        for index in range(1, args.workers + 1)
    ]
    for worker in workers:
        worker.start()
    reported: set[int] = set()
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("trials, {task.fields[running]} running"),
            console=console,
        ) as progress:
            tasks = {
                study_name(plan.space, plan.depth): progress.add_task(
                    study_name(plan.space, plan.depth), total=plan.trials, running=0
                )
                for plan in plans
            }
            while any(worker.is_alive() for worker in workers):
                _draw(progress, tasks, storage)
                _report_exits(workers, reported)
                time.sleep(POLL_SECONDS)
            _draw(progress, tasks, storage)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C reaches every worker from the terminal; SIGTERM reaches this
        # process only, so pass it on. Then let each mark its trial failed.
        from blocksearch.cli import _Terminated

        terminated = isinstance(interrupt, _Terminated)
        for worker in workers:
            if terminated and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.join(timeout=60)
        raise
    finally:
        listener.stop()
    _report_exits(workers, reported)

    codes = [worker.exitcode for worker in workers]
    failed = [code for code in codes if code]
    if not failed:
        return 0
    full = _studies_full(plans, storage)
    if full and all(code is not None and code < 0 for code in failed):
        logger.warning(
            "every study is full although %d workers were killed; their "
            "trials were marked failed and retried",
            len(failed),
        )
        return 0
    positive = [code for code in failed if code is not None and code > 0]
    return positive[0] if positive else 1


def _draw(progress: Progress, tasks: dict[str, int], storage) -> None:
    from optuna.trial import TrialState

    for name, task in tasks.items():
        try:
            trials = storage.get_all_trials(
                storage.get_study_id_from_name(name), deepcopy=False
            )
        except KeyError:
            continue
        done = sum(t.state in COUNTED_STATES for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        progress.update(task, completed=done, running=running)


def _report_exits(workers, reported: set[int]) -> None:
    for index, worker in enumerate(workers, start=1):
        code = worker.exitcode
        if code is None or index in reported:
            continue
        reported.add(index)
        if code < 0:
            name = signal.Signals(-code).name
            logger.warning(
                "worker %d was stopped by %s; its running trial will be marked "
                "failed once silent for --stale-after seconds, and retried",
                index,
                name,
            )
        elif code not in (0, 130, 143):
            logger.error("worker %d exited with code %d", index, code)


def _studies_full(plans: list[StudyPlan], storage) -> bool:
    for plan in plans:
        study = optuna.load_study(
            study_name=study_name(plan.space, plan.depth), storage=storage
        )
        if len(study.get_trials(deepcopy=False, states=COUNTED_STATES)) < plan.trials:
            return False
    return True


class _WorkerPrefix(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.prefix = f"worker {index}: "

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.prefix + str(record.msg)
        return True


def worker_main(
    args: argparse.Namespace,
    index: int,
    threads: int,
    queue: multiprocessing.Queue,
    presets: tuple[str, ...] | None,
    designs: tuple[str, ...],
) -> None:
    """Body of one worker process; its exit code follows the command's.

    ``presets`` and ``designs`` are those the parent checked, so that a
    worker neither reads a designs file again nor repeats its warnings.
    """
    import sys

    import torch

    from blocksearch.cli import _raise_terminated, _Terminated
    from blocksearch.data import DATA_ENV_VAR, load_dataset
    from blocksearch.errors import BlocksearchError
    from blocksearch.space import load_space
    from blocksearch.study import open_storage, run_space
    from blocksearch.train import resolve_device

    handler = logging.handlers.QueueHandler(queue)
    handler.addFilter(_WorkerPrefix(index))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if args.debug else logging.INFO)
    logger.propagate = False
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    signal.signal(signal.SIGTERM, _raise_terminated)
    torch.set_num_threads(threads)

    from blocksearch.cli.run import artifact_location, run_options, storage_location

    try:
        space = load_space(args.space)
        device = str(resolve_device(args.device))
        if device == "cuda" and torch.cuda.device_count() > 1:
            device = f"cuda:{(index - 1) % torch.cuda.device_count()}"
        source = args.data or os.environ.get(DATA_ENV_VAR) or space.dataset
        dataset = load_dataset(source)
        run_space(
            space,
            dataset,
            storage=open_storage(storage_location(args, space)),
            device=device,
            artifact_dir=artifact_location(args, space),
            worker=index - 1,
            presets=presets,
            designs=designs,
            **run_options(args),
        )
    except BlocksearchError as error:
        logger.error("%s", error)
        sys.exit(error.exit_code)
    except _Terminated:
        sys.exit(143)
    except KeyboardInterrupt:
        sys.exit(130)
