"""The ``run`` command and its progress display."""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from blocksearch.errors import BlocksearchError, DslError, SpaceError, UsageError
from blocksearch.space import Space
from blocksearch.study import default_storage_path, study_name

logger = logging.getLogger("blocksearch")


class RichReporter:
    """Draws one progress bar per study, counting epochs of the trials to run."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}
        self.epochs_done: dict[str, int] = {}

    def study_started(self, plan, finished: int) -> None:
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
        return study_name(plan.space, plan.depth)


def make_progress(console: Console) -> Progress:
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


def storage_location(args: argparse.Namespace, space) -> str:
    if args.storage:
        return args.storage
    return str(default_storage_path(space, args.studies_dir))


def artifact_location(args: argparse.Namespace, space: Space) -> Path:
    """Return the artifact folder: ``--artifact-dir`` or one beside the studies."""
    if args.artifact_dir:
        return Path(args.artifact_dir)
    return Path(args.studies_dir) / f"{space.name}-artifacts"


def load_data(source: str, console: Console):
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


_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str) -> None:
    """Reject a device name that blocksearch cannot train on, with the fix.

    Raises:
        BlocksearchError: If the name is malformed or names hardware this
            machine lacks.
    """
    import torch

    if not _DEVICE_PATTERN.fullmatch(name):
        raise UsageError(
            f"invalid device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise BlocksearchError(
            "device 'mps' requested but this machine has no usable Apple GPU; "
            "use --device cpu or --device auto"
        )
    if name.startswith("cuda:") and torch.cuda.is_available():
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise BlocksearchError(
                f"device {name!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA devices, numbered from 0"
            )


def check_model_size(space: Space, depths: list[int], in_features: int = 3072) -> None:
    """Reject depths whose float32 parameters alone exceed this machine's memory.

    Raises:
        BlocksearchError: If a depth needs more parameter memory than the
            machine has in total, so that building the model would fail.
    """
    from blocksearch.builder import count_parameters

    total = physical_memory()
    if total is None:
        return
    for depth in depths:
        needed = 4 * count_parameters(
            space.presets.get("control") or next(iter(space.presets.values()), None),
            depth=depth,
            width=space.width,
            in_features=in_features,
        )
        if needed > total:
            raise BlocksearchError(
                f"depth {depth} at width {space.width} needs about "
                f"{needed / 2**30:.1f} GiB for its parameters alone, more than "
                f"this machine's {total / 2**30:.1f} GiB; choose a smaller --depths"
            )


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None  # not reported on this platform; skip the check


def available_cores() -> int:
    """Return the CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_options(args: argparse.Namespace) -> dict[str, object]:
    """Return the keyword arguments of ``run_space`` that come from ``args``,
    less the presets and given designs, which need the space to check."""
    return {
        "depths": args.depths,
        "trials": args.trials,
        "epochs": args.epochs,
        "seed": args.seed,
        "repeat_duplicates": args.repeat_duplicates or None,
        "sampler": args.sampler,
        "pruner": args.pruner,
        "warmup_epochs": args.warmup_epochs,
        "repeats": args.repeats,
        "protocol": args.protocol,
        "validation_size": args.validation_size,
        "grad_norm_every": args.grad_norm_every,
        "bf16": args.bf16 or None,
        "compile": args.compile or None,
        "stale_after": args.stale_after,
    }


def command_run(args: argparse.Namespace, console: Console) -> int:
    import optuna
    import torch

    from blocksearch.data import DATA_ENV_VAR
    from blocksearch.space import load_space
    from blocksearch.storage import shown_location
    from blocksearch.study import (
        check_storage,
        open_storage,
        open_study,
        plan_space,
        prepare_data,
        run_space,
    )
    from blocksearch.train import resolve_device

    # checks: everything a user can get wrong, before any slow or lasting step
    space = load_space(args.space)
    check_device(args.device)
    device = resolve_device(args.device)
    if args.data is not None and not args.data.strip():
        raise UsageError(
            "--data is empty; give a dataset folder, 'cifar10' or 'synthetic', "
            "or leave the option out"
        )
    if args.compile and (args.grad_norm_every or 1) == 1:
        raise UsageError(
            "--compile needs --grad-norm-every above 1: steps that gather block "
            "gradient norms run eagerly, so with every step measured the "
            "compiled network would never run. Add e.g. --grad-norm-every 10"
        )
    location = storage_location(args, space)
    check_storage(location)
    check_shared_storage(location, args.workers)
    depths = args.depths or list(space.depths)
    check_model_size(space, depths)
    options = run_options(args)
    options["presets"] = chosen_presets(args.presets, space)
    options["designs"] = given_designs(args.designs, space, options["presets"])
    stale_after = options.pop("stale_after")
    plans = plan_space(
        space,
        **{k: v for k, v in options.items() if k != "validation_size"},
    )
    threads = args.threads or max(1, available_cores() // args.workers)
    if args.threads or args.workers > 1:
        torch.set_num_threads(threads)

    # data before storage: a bad dataset must not leave a new, empty file
    source = args.data or os.environ.get(DATA_ENV_VAR) or space.dataset
    dataset = load_data(source, console)
    if args.protocol == "validation":
        dataset.check_validation_size(args.validation_size or space.validation_size)
    storage = open_storage(location)
    # blocksearch logs every finished, failed and interrupted trial itself;
    # Optuna's own lines would repeat them, with a traceback for Ctrl-C.
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    logger.info(
        "space %s, storage %s, device %s", space.name, shown_location(location), device
    )
    started = time.perf_counter()
    if args.workers > 1:
        # Create or check every study here, so that a conflict is reported
        # once, before any worker starts.
        split = prepare_data(
            space, dataset, protocol=args.protocol, validation_size=args.validation_size
        )
        left = 0
        for plan in plans:
            study = open_study(plan, storage, split)
            left += max(0, plan.trials - len(study.get_trials(deepcopy=False)))
        if 1 <= left < args.workers:
            logger.info(
                "%d trials left to start; starting %d workers, not %d",
                left,
                left,
                args.workers,
            )
            args.workers = left
        cores = available_cores()
        if args.workers > cores and str(device) == "cpu":
            logger.warning(
                "%d workers share %d CPU cores: trials will not finish sooner "
                "than with --workers %d",
                args.workers,
                cores,
                cores,
            )
        from blocksearch.cli.workers import run_workers

        code = run_workers(args, plans, storage, threads, console)
        if code != 0:
            return code
    else:
        with make_progress(console) as progress:
            run_space(
                space,
                dataset,
                storage=storage,
                device=str(device),
                reporter=RichReporter(progress),
                artifact_dir=artifact_location(args, space),
                stale_after=stale_after,
                **options,
            )
    if args.storage:
        where = f" --storage {shown_location(args.storage)}"
    elif args.studies_dir != "studies":
        where = f" --studies-dir {args.studies_dir}"
    else:
        where = ""
    logger.info(
        "finished %d studies in %.0f s; inspect them with: blocksearch show %s%s",
        len(plans),
        time.perf_counter() - started,
        args.space,
        where,
    )
    return 0


def chosen_presets(names: str | None, space: Space) -> tuple[str, ...] | None:
    """Return the preset names of ``--presets`` in the space's order, or
    None (all presets) without the option.

    Raises:
        UsageError: If a name is empty or not a preset of the space, if
            'none' comes with other names, or if the space has no presets.
    """
    if names is None:
        return None
    requested = [name.strip() for name in names.split(",")]
    if requested == ["none"]:
        return ()
    if not space.presets:
        raise UsageError(
            f"--presets {names!r}: space {space.name!r} has no presets; "
            "leave the option out"
        )
    known = ", ".join(space.presets)
    if "none" in requested:
        raise UsageError(
            f"--presets {names!r}: 'none' cannot be combined with preset names; "
            f"give 'none' alone, or names from: {known}"
        )
    if not all(requested):
        raise UsageError(
            f"--presets {names!r} has an empty name; give names separated by "
            f"commas, from: {known}, or 'none'"
        )
    unknown = [name for name in requested if name not in space.presets]
    if unknown:
        raise UsageError(
            f"--presets: space {space.name!r} has no preset {unknown[0]!r}; "
            f"choose from: {known}, or 'none'"
        )
    return tuple(name for name in space.presets if name in requested)


def given_designs(
    target: str | None, space: Space, presets: tuple[str, ...] | None = None
) -> tuple[str, ...] | None:
    """Return the canonical designs of ``--designs``: a file, else one design.

    Designs equal to a preset in ``presets`` (None: all) are left out, with a
    warning: the preset trains anyway.

    Raises:
        UsageError: If the option is empty, or names a folder, a missing
            ``.txt`` or ``.dsl`` file or a file that is not text, or a design
            is a preset left out of ``presets`` or one the space's search
            cannot produce.
        DslError: If the text does not parse.
    """
    from blocksearch.dsl import canonical, split_designs

    if target is None:
        return None
    path = Path(target)
    if not target.strip():
        raise UsageError(
            "--designs is empty; give a design in quotes or a file of designs"
        )
    if path.is_dir():
        raise UsageError(
            f"--designs {target!r} is a folder; give a file of designs, such as "
            "the design.txt that 'blocksearch export' writes"
        )
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise UsageError(
                f"--designs file {target!r} is not UTF-8 text; give a text file "
                "of designs separated by blank lines"
            ) from None
        except OSError as error:
            raise UsageError(
                f"cannot read --designs file {target!r}: {error.strerror}"
            ) from None
    elif path.suffix in (".txt", ".dsl"):
        raise UsageError(
            f"--designs file {target!r} does not exist; check the path, or give "
            "one design in quotes"
        )
    else:
        text = target
    source = "--designs" if text is target else f"--designs file {target!r}"
    preset_of = {canonical(design): name for name, design in space.presets.items()}
    designs = []
    try:
        texts = split_designs(text)
    except DslError as error:
        raise DslError(f"{source}: {error}") from None
    for design in dict.fromkeys(canonical(d) for d in texts):
        try:
            space.search.params_for(design)
        except SpaceError as error:
            raise UsageError(
                f"{source}: {error}. Space {space.name!r} can train only "
                "designs its search produces"
            ) from None
        preset = preset_of.get(design)
        if preset is not None and presets is not None and preset not in presets:
            raise UsageError(
                f"{source}: {design!r} is preset {preset}, which --presets "
                f"leaves out; add {preset} to --presets instead"
            )
        if preset is not None:
            logger.warning(
                "%s: %r is preset %s, which trains as a preset anyway; "
                "not adding it again",
                source,
                design,
                preset,
            )
            continue
        designs.append(design)
    return tuple(designs)


def check_shared_storage(location: str, workers: int) -> None:
    """Refuse, before starting, a storage that several workers cannot share.

    Raises:
        BlocksearchError: If ``workers`` is above 1 and ``location`` is an
            SQLite database, whose single file lock makes concurrent writers
            fail with "database is locked" in the middle of a run.
    """
    if workers > 1 and location.startswith("sqlite:"):
        raise BlocksearchError(
            f"--workers {workers} cannot share SQLite storage {location!r}: "
            "concurrent writers fail midway with 'database is locked'. Use a "
            "journal file (the default, or --storage studies/NAME.journal) or "
            "a PostgreSQL URL"
        )
