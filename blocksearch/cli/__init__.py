"""The ``blocksearch`` command: run, show, compile, check, ops, export, plot and
dashboard.

User mistakes end with one message and an exit code (see
:mod:`blocksearch.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from blocksearch import __version__

__all__ = ["main"]

logger = logging.getLogger("blocksearch")


# ---------------------------------------------------------------------------
# Argument types


def _int_at_least(minimum: int, rule: str):
    """Return an argparse type that accepts whole numbers of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer; give {rule}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is too small; give {rule}")
        return value

    return parse


_positive_int = _int_at_least(1, "a whole number of 1 or more")
_non_negative_int = _int_at_least(0, "a whole number of 0 or more")


def _port(text: str) -> int:
    value = _int_at_least(1, "a port number from 1 to 65535")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too large; give a port number from 1 to 65535"
        )
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give a positive number of seconds"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range; give a positive, finite number of seconds"
        )
    return value


def _depth_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
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
        help="device to train on: auto (CUDA when available), cpu, cuda, "
        "cuda:N or mps (Apple GPUs) (default: auto)",
    )
    run.add_argument(
        "--threads",
        type=_positive_int,
        help="torch CPU threads per worker (default: torch's own choice with "
        "one worker; with several, the available cores divided among them)",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="K",
        help="worker processes that train trials side by side on the same "
        "storage; --trials stays the total per study. Workers on other machines "
        "join with the same command and a shared --storage URL (default: 1)",
    )
    run.add_argument(
        "--stale-after",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="seconds without a heartbeat after which another worker marks a "
        "running trial failed and enqueues its design again, once; trials "
        "record a heartbeat every sixth of this (default: 120)",
    )
    speed = run.add_argument_group(
        "speed options",
        "Options that change only how fast trials train. --bf16 and --compile "
        "also change rounding, so a study records them and refuses to mix "
        "trials with and without them.",
    )
    speed.add_argument(
        "--grad-norm-every",
        type=_positive_int,
        metavar="K",
        help="measure the per-block gradient norms on every K-th training step "
        "only; the stored norm is the mean over measured steps. Training itself "
        "is unchanged (default: 1, every step)",
    )
    speed.add_argument(
        "--bf16",
        action="store_true",
        help="inexact: run forward passes under bfloat16 autocast (matrix "
        "products in bfloat16, accumulated in float32); fastest on GPUs and "
        "CPUs with bfloat16 units",
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        help="inexact: train the network compiled by torch.compile, which fuses "
        "element-wise ops and so rounds differently; costs a minute of "
        "compilation per trial, and on small CPUs has measured slower. Pair it "
        "with --grad-norm-every above 1",
    )
    run.add_argument(
        "--sampler",
        choices=("auto", "tpe", "random", "brute-force"),
        help="how sampled trials choose designs: auto (brute force when the "
        "space has no more designs than --trials, else TPE), tpe (seeded "
        "multivariate TPE), random (a baseline) or brute-force "
        "(default: the space's value, auto unless it says otherwise)",
    )
    run.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        help="pruner that stops weak sampled trials early; presets are never "
        "pruned (default: the space's value, median unless it says otherwise)",
    )
    run.add_argument(
        "--warmup-epochs",
        type=_non_negative_int,
        help="epochs every trial runs before the pruner may stop it "
        "(default: the space's value, 2 unless it says otherwise)",
    )
    run.add_argument(
        "--protocol",
        choices=("validation", "paper"),
        default="validation",
        help="how designs are selected: validation (accuracy on images held "
        "out of the train split; the test split is measured, never used to "
        "choose) or paper (whole train split, test accuracy, as published) "
        "(default: validation)",
    )
    run.add_argument(
        "--validation-size",
        type=_positive_int,
        help="train images held out for validation, in images "
        "(default: the space's value, 5000 unless it says otherwise)",
    )
    run.add_argument(
        "--repeats",
        type=_positive_int,
        default=1,
        help="seeds per design; the objective is their mean and every seed's "
        "curves are kept (default: 1)",
    )
    run.add_argument(
        "--designs",
        metavar="FILE_OR_DSL",
        help="designs to train after the presets, each once per study and "
        "never pruned: a design, or a file of designs separated by blank lines "
        "such as the design.txt that 'blocksearch export' writes. Each must be "
        "a design of the space's search; use it to retrain a search's best "
        "design with other seeds (--repeats) beside the presets "
        "(default: none)",
    )
    run.add_argument(
        "--presets",
        metavar="NAMES",
        help="comma-separated presets to train first, e.g. control, or 'none'. "
        "Use it to retrain a design beside control alone. Presets a study "
        "already contains stay in it (default: all of the space's presets)",
    )
    run.add_argument(
        "--repeat-duplicates",
        action="store_true",
        help="train a sampled design again even when an equal design already "
        "finished at this depth (default: reuse the earlier trial's value)",
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
        type=_non_negative_int,
        default=5,
        help="sampled designs to list per study, best first (default: 5)",
    )
    show.add_argument(
        "--format",
        choices=("table", "markdown", "json", "csv"),
        default="table",
        help="output format; accuracies are percentages in table and markdown, "
        "fractions in json and csv (default: table)",
    )
    show.add_argument(
        "--theory",
        action="store_true",
        help="print, per study, the Spearman rank correlation between each "
        "path statistic and the objective across complete trials",
    )

    compile_ = commands.add_parser(
        "compile",
        help="print a design's canonical form, hash, module and path statistics",
        description="Parse a block or network design and print its canonical "
        "form, its hash, the PyTorch module it compiles to and the statistics "
        "of its gradient paths.",
    )
    compile_.add_argument(
        "dsl", help="design, e.g. 'linear bn + tanh' or '1/3: exp1; control'"
    )
    compile_.add_argument(
        "--width",
        type=_positive_int,
        default=256,
        help="features per block (default: 256)",
    )
    compile_.add_argument(
        "--depth",
        type=_positive_int,
        help="number of blocks: build the whole network and analyse its paths "
        "(default: a single block, depth 1; required for designs with regions)",
    )
    output = compile_.add_mutually_exclusive_group()
    output.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: canonical, hash and path statistics",
    )
    output.add_argument(
        "--mermaid",
        action="store_true",
        help="print a Mermaid flowchart of each distinct block",
    )

    export = commands.add_parser(
        "export",
        help="write the best design of each study: description, record, weights",
        description="Write, for each stored study of a space, the best trial's "
        "canonical description (design.txt), its full record (trial.json) and, "
        "when kept, its trained weights (weights.pt, a state_dict).",
    )
    export.add_argument("space", help="path of the space file the studies ran")
    _add_storage_options(export)
    export.add_argument(
        "--depths", type=_depth_list, help="only these depths (default: all stored)"
    )
    export.add_argument(
        "--out",
        default="exports",
        metavar="DIR",
        help="folder to write into, one subfolder per study (default: exports)",
    )

    plot = commands.add_parser(
        "plot",
        help="draw presets against the best designs of each study into PNG files",
        description="Draw training loss and test accuracy per epoch of the "
        "presets and the best sampled designs, one PNG file per study.",
    )
    plot.add_argument("space", help="path of the space file the studies ran")
    _add_storage_options(plot)
    plot.add_argument(
        "--depths", type=_depth_list, help="only these depths (default: all stored)"
    )
    plot.add_argument(
        "--top",
        type=_non_negative_int,
        default=3,
        help="sampled designs to draw beside the presets, best first (default: 3)",
    )
    plot.add_argument(
        "--out",
        default="plots",
        metavar="DIR",
        help="folder for the PNG files (default: plots)",
    )

    dashboard = commands.add_parser(
        "dashboard",
        help="serve the studies of a space in optuna-dashboard, with their plots",
        description="Start optuna-dashboard on the storage of a space, with the "
        "space's artifact folder so that each trial's plots show beside it. "
        "It listens on the loopback address unless --host says otherwise; the "
        "dashboard has no login, and anyone who reaches it can edit studies.",
    )
    dashboard.add_argument("space", help="path of the space file the studies ran")
    _add_storage_options(dashboard)
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 exposes the studies to the network "
        "(default: 127.0.0.1, this machine only)",
    )
    dashboard.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="TCP port to listen on (default: 8080)",
    )

    check = commands.add_parser(
        "check",
        help="report every error in a design or a file of designs",
        description="Parse a design, or a file of designs separated by blank "
        "lines ('#' starts a comment), and report every error, not only the "
        "first. Exits with 3 when there is any.",
    )
    check.add_argument("target", metavar="FILE_OR_DSL", help="a file path or a design")

    commands.add_parser(
        "ops",
        help="list the registered ops and their arguments",
        description="List every registered op: built-in ones, those of installed "
        "plug-ins, with its arguments, defaults and kind.",
    )
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
    parser.add_argument(
        "--artifact-dir",
        metavar="DIR",
        help="folder of plots, notes and best weights; pass the same folder to "
        "optuna-dashboard --artifact-dir to see the plots "
        "(default: <studies-dir>/<space name>-artifacts)",
    )


# ---------------------------------------------------------------------------
# Dispatch

# Command modules import torch; loading them only when a command runs keeps
# --help fast.
COMMANDS = {
    "run": ("blocksearch.cli.run", "command_run"),
    "show": ("blocksearch.cli.inspect", "command_show"),
    "compile": ("blocksearch.cli.inspect", "command_compile"),
    "check": ("blocksearch.cli.inspect", "command_check"),
    "ops": ("blocksearch.cli.inspect", "command_ops"),
    "export": ("blocksearch.cli.inspect", "command_export"),
    "plot": ("blocksearch.cli.inspect", "command_plot"),
    "dashboard": ("blocksearch.cli.inspect", "command_dashboard"),
}


def _configure_logging(console: Console, debug: bool) -> None:
    handler = RichHandler(console=console, show_path=debug, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


#: Width of standard output when it is not a terminal, in characters.
PIPED_WIDTH = 1000


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    from blocksearch.errors import BlocksearchError

    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        # Piped into a file or another program: a table keeps one line per
        # row instead of wrapping at rich's default of 80 columns.
        out = Console(width=PIPED_WIDTH)
    _configure_logging(console, args.debug)
    module_name, function_name = COMMANDS[args.command]
    # Optuna marks a trial failed when its objective raises KeyboardInterrupt,
    # so SIGTERM from a job scheduler or `timeout` leaves no trial running.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        command = getattr(importlib.import_module(module_name), function_name)
        return command(args, console if args.command == "run" else out)
    except BlocksearchError as error:
        if args.debug:
            raise
        # soft_wrap keeps a caret under the character it points at
        console.print(
            Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True
        )
        return error.exit_code
    except _Terminated:
        console.print(
            "terminated; the running trial is marked failed. "
            "Run the same command again to resume.",
            soft_wrap=True,
        )
        return 143
    except KeyboardInterrupt:
        console.print(
            "interrupted; the running trial is marked failed. "
            "Run the same command again to resume.",
            soft_wrap=True,
        )
        return 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM turned into an exception; Optuna fails the running trial on it,
    as it does on Ctrl-C, because it derives from KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def entry_point() -> None:
    sys.exit(main())
