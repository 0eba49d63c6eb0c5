"""The ``blocksearch`` command: run, show, compile and ops.

User mistakes end with one message and an exit code (see
:mod:`blocksearch.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from blocksearch import __version__

__all__ = ["main"]

logger = logging.getLogger("blocksearch")


# ---------------------------------------------------------------------------
# Argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer; give a positive whole number"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _depth_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no depth; give positive integers separated by "
            "commas, e.g. 15,20"
        )
    depths = []
    for part in parts:
        try:
            depths.append(_positive_int(part))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"depth {part!r} in {text!r} is not a positive integer; "
                "give positive integers separated by commas, e.g. 15,20"
            ) from None
    return list(dict.fromkeys(depths))


# ---------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blocksearch",
        description=(
            "Search where activations belong in residual blocks: compile block "
            "descriptions and run Optuna studies per network depth."
        ),
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show full tracebacks and debug logs instead of one-line errors",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run the studies of a space file (resumes where it stopped)",
        description=(
            "Run one Optuna study per depth of a space file. Presets run first, "
            "then sampled designs. Running the same command again resumes: "
            "finished trials count toward --trials and presets are not repeated."
        ),
    )
    run.add_argument(
        "space", help="path of a space file, e.g. spaces/tanh_placements.py"
    )
    run.add_argument(
        "--depths",
        type=_depth_list,
        help="comma-separated numbers of residual blocks, e.g. 15,20 "
        "(default: the space's depths)",
    )
    run.add_argument(
        "--trials",
        type=_positive_int,
        help="total trials per study, counting finished trials already stored "
        "(default: the space's value)",
    )
    run.add_argument(
        "--epochs",
        type=_positive_int,
        help="training epochs per trial (default: the space's value)",
    )
    run.add_argument(
        "--seed",
        type=int,
        help="seed of weights, data order and sampler (default: the space's value)",
    )
    _add_data_options(run)
    _add_storage_options(run)
    run.add_argument(
        "--device",
        default="auto",
        help="device to train on: auto (CUDA when available), cpu, cuda or "
        "cuda:N (default: auto)",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        help="torch CPU threads (default: torch's own choice)",
    )

    show = commands.add_parser(
        "show",
        help="print the presets beside the best designs of each study",
        description="Print, per depth, the presets beside the best sampled designs.",
    )
    show.add_argument("space", help="path of the space file the studies ran")
    _add_storage_options(show)
    show.add_argument(
        "--top",
        type=int,
        default=5,
        help="sampled designs to list per study, best first (default: 5)",
    )

    compile_ = commands.add_parser(
        "compile",
        help="print the canonical form and the module of a block description",
        description="Parse a block description and print its canonical form "
        "and the PyTorch module it compiles to.",
    )
    compile_.add_argument("dsl", help="block description, e.g. 'linear bn + tanh'")
    compile_.add_argument(
        "--width",
        type=_positive_int,
        default=256,
        help="features per block (default: 256)",
    )
    compile_.add_argument(
        "--depth",
        type=_positive_int,
        help="also build the whole network with this many blocks",
    )

    commands.add_parser("ops", help="list the registered ops and their arguments")
    return parser


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="dataset: 'cifar10' (torchvision download), a folder with train/ "
        "and test/ class folders (ImageFolder layout), a folder holding "
        "torchvision's cifar-10-batches-py, or 'synthetic' for a tiny test set "
        "(default: $BLOCKSEARCH_DATA, else the space's dataset)",
    )


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="study storage: a journal file path, or a database URL such as "
        "sqlite:///studies/x.db or postgresql://user@host/db "
        "(default: <studies-dir>/<space name>.journal)",
    )
    parser.add_argument(
        "--studies-dir",
        default="studies",
        metavar="DIR",
        help="folder of the default journal file (default: studies)",
    )


# ---------------------------------------------------------------------------
# Progress display


class RichReporter:
    """Draws one progress bar per study, counting epochs of the trials to run."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}
        self.epochs_done: dict[str, int] = {}

    def study_started(self, plan, finished: int) -> None:
        from blocksearch.study import study_name

        name = study_name(plan.space, plan.depth)
        remaining = max(0, plan.trials - finished)
        self.tasks[name] = self.progress.add_task(
            name,
            total=remaining * plan.epochs,
            trial="",
            epoch="",
            loss="",
            accuracy="",
        )

    def trial_started(self, plan, trial, label: str) -> None:
        name = self._name(plan)
        self.epochs_done[name] = 0
        self.progress.update(
            self.tasks[name],
            trial=f"trial {trial.number} ({label})",
            epoch=f"epoch 0/{plan.epochs}",
            loss="",
            accuracy="",
        )

    def epoch_finished(self, plan, metrics) -> None:
        name = self._name(plan)
        self.epochs_done[name] += 1
        self.progress.update(
            self.tasks[name],
            advance=1,
            epoch=f"epoch {metrics.epoch}/{plan.epochs}",
            loss=f"loss {metrics.train_loss:.4f}",
            accuracy=f"acc {100 * metrics.test_accuracy:.2f}%",
        )

    def trial_finished(self, plan, trial) -> None:
        # A pruned trial skips its remaining epochs; keep the bar's total true.
        name = self._name(plan)
        skipped = plan.epochs - self.epochs_done.get(name, plan.epochs)
        if skipped > 0:
            self.progress.update(self.tasks[name], advance=skipped)
        self.epochs_done[name] = plan.epochs

    @staticmethod
    def _name(plan) -> str:
        from blocksearch.study import study_name

        return study_name(plan.space, plan.depth)


def _make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[trial]}"),
        TextColumn("{task.fields[epoch]}"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[accuracy]}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
    )


# ---------------------------------------------------------------------------
# Commands


def _storage_location(args: argparse.Namespace, space) -> str:
    from blocksearch.study import default_storage_path

    if args.storage:
        return args.storage
    return str(default_storage_path(space, args.studies_dir))


def _load_data(source: str, console: Console):
    from blocksearch import data

    with Progress(
        TextColumn("loading {task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(source, total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        dataset = data.load_dataset(source, on_progress=on_progress)
    logger.info(
        "dataset %s: %d train and %d test images, %d features, %d classes",
        dataset.name,
        len(dataset.train_labels),
        len(dataset.test_labels),
        dataset.in_features,
        dataset.num_classes,
    )
    return dataset


def command_run(args: argparse.Namespace, console: Console) -> int:
    import optuna
    import torch

    from blocksearch.data import DATA_ENV_VAR
    from blocksearch.space import load_space
    from blocksearch.study import open_storage, run_space
    from blocksearch.train import resolve_device

    space = load_space(args.space)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = args.data or os.environ.get(DATA_ENV_VAR) or space.dataset
    # Data first: a bad dataset must not leave a new, empty storage file.
    dataset = _load_data(source, console)
    location = _storage_location(args, space)
    storage = open_storage(location)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    logger.info("space %s, storage %s, device %s", space.name, location, device)
    started = time.perf_counter()
    with _make_progress(console) as progress:
        studies = run_space(
            space,
            dataset,
            storage=storage,
            depths=args.depths,
            trials=args.trials,
            epochs=args.epochs,
            seed=args.seed,
            device=str(device),
            reporter=RichReporter(progress),
        )
    logger.info(
        "finished %d studies in %.0f s; inspect them with: blocksearch show %s%s",
        len(studies),
        time.perf_counter() - started,
        args.space,
        f" --storage {args.storage}" if args.storage else "",
    )
    return 0


def command_show(args: argparse.Namespace, console: Console) -> int:
    import optuna

    from blocksearch.errors import StudyError
    from blocksearch.report import study_table
    from blocksearch.space import load_space
    from blocksearch.study import open_storage, study_name

    space = load_space(args.space)
    location = _storage_location(args, space)
    if "://" not in location and not Path(location).is_file():
        raise StudyError(
            f"storage file {location!r} not found; run "
            f"'blocksearch run {args.space}' first, or pass --storage"
        )
    storage = open_storage(location)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    shown = 0
    for depth in space.depths:
        name = study_name(space, depth)
        if name not in names:
            continue
        study = optuna.load_study(study_name=name, storage=storage)
        console.print(study_table(study, top=args.top))
        shown += 1
    if not shown:
        raise StudyError(
            f"storage {location!r} has no study of space {space.name!r}; run "
            f"'blocksearch run {args.space}' first"
        )
    return 0


def command_compile(args: argparse.Namespace, console: Console) -> int:
    from blocksearch.builder import ResidualMLP, build_block
    from blocksearch.dsl import format_block, parse_block

    block = parse_block(args.dsl)
    console.print(format_block(block), highlight=False, markup=False, soft_wrap=True)
    if args.depth:
        module = ResidualMLP(block, depth=args.depth, width=args.width)
    else:
        module = build_block(block, args.width)
    parameters = sum(p.numel() for p in module.parameters())
    console.print(str(module), highlight=False, markup=False, soft_wrap=True)
    console.print(f"parameters: {parameters:,}", highlight=False)
    return 0


def command_ops(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from blocksearch import ops

    table = Table("op", "kind", "description")
    table.columns[0].no_wrap = True
    for name in ops.op_names():
        definition = ops.get_op(name)
        table.add_row(definition.signature(), definition.kind.value, definition.doc)
    console.print(table)
    return 0


COMMANDS = {
    "run": command_run,
    "show": command_show,
    "compile": command_compile,
    "ops": command_ops,
}


def _configure_logging(console: Console, debug: bool) -> None:
    handler = RichHandler(console=console, show_path=debug, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    from blocksearch.errors import BlocksearchError

    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    out = Console()
    _configure_logging(console, args.debug)
    try:
        return COMMANDS[args.command](args, out if args.command != "run" else console)
    except BlocksearchError as error:
        if args.debug:
            raise
        # soft_wrap keeps a caret under the character it points at
        console.print(
            Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True
        )
        return error.exit_code
    except KeyboardInterrupt:
        console.print(
            "interrupted; the running trial is marked failed. "
            "Run the same command again to resume.",
            soft_wrap=True,
        )
        return 130


def entry_point() -> None:
    sys.exit(main())
