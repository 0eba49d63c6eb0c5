"""Commands that inspect designs and studies: show, compile, check, ops,
export and plot."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from rich.console import Console
from rich.table import Table
from rich.text import Text

from blocksearch import ops
from blocksearch.analysis import PathStats, analyse
from blocksearch.artifacts import best_weights_path
from blocksearch.builder import ResidualMLP, build_block, count_parameters
from blocksearch.cli.run import artifact_location, physical_memory, storage_location
from blocksearch.dsl import (
    check_text,
    design_hash,
    format_design,
    normalize,
    parse_design,
)
from blocksearch.errors import BlocksearchError, DslError, StudyError
from blocksearch.mermaid import design_flowchart
from blocksearch.plots import plot_comparison
from blocksearch.report import (
    compare_to_control,
    records_csv,
    records_markdown,
    select_rows,
    study_records,
    study_table,
    theory_table,
)
from blocksearch.space import load_space
from blocksearch.storage import shown_location
from blocksearch.study import open_storage, study_depths, study_name

logger = logging.getLogger("blocksearch")


def command_show(args: argparse.Namespace, console: Console) -> int:
    # Every depth stored counts, including those run with --depths.
    _, studies = _stored_studies(args)

    if args.theory:
        for study in studies:
            console.print(theory_table(study))
        return 0
    records = [study_records(study, top=args.top) for study in studies]
    if args.format == "table":
        for study in studies:
            console.print(study_table(study, top=args.top))
            comparison = compare_to_control(study, top=args.top)
            if comparison:
                _print_plain(console, comparison)
    elif args.format == "markdown":
        _print_plain(console, records_markdown(records).rstrip("\n"))
    elif args.format == "json":
        _print_plain(console, json.dumps(records, indent=2))
    else:
        _print_plain(console, records_csv(records).rstrip("\n"))
    return 0


def _print_plain(console: Console, text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _stats_lines(stats: PathStats) -> list[str]:
    acts, weights = stats.activations, stats.weight_layers
    share = stats.activation_free_paths / stats.paths
    return [
        f"paths through the blocks: {stats.paths:,} (2^{stats.log2_paths:g})",
        f"activations per path: min {acts.min}, mean {acts.mean:g}, max {acts.max}",
        f"weight layers per path: min {weights.min}, mean {weights.mean:g}, "
        f"max {weights.max}",
        f"activations on the pure skip chain: {stats.skip_chain_activations}",
        f"paths without activations: {stats.activation_free_paths:,} ({share:.3g})",
    ]


def command_compile(args: argparse.Namespace, console: Console) -> int:
    design = normalize(parse_design(args.dsl))
    depth = args.depth
    if depth is None and design.block is None:
        raise DslError(
            f"design {format_design(design)!r} has regions, so its network "
            "depends on the depth; pass --depth N"
        )
    at_depth = design.at_depth(depth or 1)
    canonical_text = format_design(design)

    if args.mermaid:
        _print_plain(console, design_flowchart(design))
        return 0
    stats = analyse(design, depth or 1)
    if args.json:
        record = {
            "canonical": canonical_text,
            "hash": design_hash(design),
            "depth": stats.depth,
            "canonical_at_depth": format_design(at_depth),
            "hash_at_depth": design_hash(at_depth),
            **stats.to_dict(),
        }
        _print_plain(console, json.dumps(record, indent=2))
        return 0

    needed = 4 * count_parameters(
        design, depth=depth or 1, width=args.width, in_features=3072
    )
    memory = physical_memory()
    if memory is not None and needed > memory:
        raise BlocksearchError(
            f"this network needs about {needed / 2**30:.1f} GiB for its parameters "
            f"alone, more than this machine's {memory / 2**30:.1f} GiB; choose a "
            "smaller --depth or --width"
        )
    if depth is None:
        module = build_block(design.block, args.width)
    else:
        module = ResidualMLP(design, depth=depth, width=args.width)
    parameters = sum(p.numel() for p in module.parameters())
    _print_plain(console, canonical_text)
    _print_plain(console, f"hash: {design_hash(design)}")
    _print_plain(console, str(module))
    _print_plain(console, f"parameters: {parameters:,}")
    _print_plain(console, f"path statistics at depth {stats.depth}:")
    for line in _stats_lines(stats):
        _print_plain(console, f"  {line}")
    return 0


def command_check(args: argparse.Namespace, console: Console) -> int:
    path = Path(args.target)
    if path.is_file():
        text = path.read_text()
        label = str(path)
    else:
        text = args.target
        label = "the argument"
    errors = check_text(text)
    if not text.strip():
        errors = [DslError("the text is empty; write at least one design")]
    for error in errors:
        console.print(
            Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True
        )
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        _print_plain(console, f"{len(errors)} {noun} in {label}")
        return DslError.exit_code
    _print_plain(console, f"no errors in {label}")
    return 0


def command_ops(args: argparse.Namespace, console: Console) -> int:
    table = Table("op", "kind", "description")
    table.columns[0].no_wrap = True
    for name in ops.op_names():
        definition = ops.get_op(name)
        table.add_row(definition.signature(), definition.kind.value, definition.doc)
    console.print(table)
    return 0


def _open_existing(args: argparse.Namespace, space) -> tuple[str, object]:
    """Open the storage of ``space`` named by ``args``, which must exist."""
    location = storage_location(args, space)
    if "://" not in location and not Path(location).is_file():
        raise StudyError(
            f"storage file {location!r} not found; run "
            f"'blocksearch run {args.space}' first, or pass --storage"
        )
    return location, open_storage(location)


def _stored_studies(args: argparse.Namespace) -> tuple[object, list[optuna.Study]]:
    """Load the space and its stored studies, limited to ``--depths`` if given."""
    space = load_space(args.space)
    location, storage = _open_existing(args, space)
    depths = study_depths(storage, space)
    if getattr(args, "depths", None):
        missing = sorted(set(args.depths) - set(depths))
        if missing:
            raise StudyError(
                f"storage {shown_location(location)!r} has no study of space "
                f"{space.name!r} at "
                f"depth {', '.join(map(str, missing))}; stored depths: "
                f"{', '.join(map(str, depths)) or 'none'}"
            )
        depths = [d for d in depths if d in args.depths]
    if not depths:
        raise StudyError(
            f"storage {shown_location(location)!r} has no study of space "
            f"{space.name!r}; run "
            f"'blocksearch run {args.space}' first"
        )
    studies = [
        optuna.load_study(study_name=study_name(space, depth), storage=storage)
        for depth in depths
    ]
    return space, studies


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError:
        raise StudyError(
            f"study {study.study_name!r} has no complete trial yet; run more "
            "trials first"
        ) from None


def command_export(args: argparse.Namespace, console: Console) -> int:
    space, studies = _stored_studies(args)
    artifact_dir = artifact_location(args, space)
    for study in studies:
        best = _best_trial(study)
        folder = Path(args.out) / study.study_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "design.txt").write_text(best.user_attrs.get("dsl", "") + "\n")
        record = {
            "study": study.study_name,
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "user_attrs": best.user_attrs,
        }
        (folder / "trial.json").write_text(json.dumps(record, indent=2) + "\n")
        weights = best_weights_path(artifact_dir, study.study_name)
        source_trial = None
        if weights is not None:
            source_trial = int(weights.stem.split("-")[1])
        if weights is not None and source_trial == best.number:
            shutil.copyfile(weights, folder / "weights.pt")
            saved = "design, record and weights"
        else:
            # NOTE: weights exist only for trials that ran with artifacts and
            # were the best complete trial when they finished.
            saved = "design and record (no weights were kept for this trial)"
        _print_plain(
            console,
            f"{study.study_name}: trial {best.number} ({best.value:.2%}) -> {folder}: "
            f"{saved}",
        )
    return 0


def command_plot(args: argparse.Namespace, console: Console) -> int:
    _, studies = _stored_studies(args)
    for study in studies:
        trials = select_rows(study, top=args.top)
        path = plot_comparison(
            trials,
            Path(args.out) / f"{study.study_name}.png",
            title=f"{study.study_name}: presets (solid) and best designs (dashed)",
        )
        _print_plain(console, f"{study.study_name}: {len(trials)} trials -> {path}")
    return 0


class _Requests(WSGIRequestHandler):
    """Request handler that logs each request at debug level only."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        logger.debug("dashboard: " + format, *args)


def command_dashboard(args: argparse.Namespace, console: Console) -> int:
    import ipaddress
    import socket

    import optuna_dashboard

    space = load_space(args.space)
    location, storage = _open_existing(args, space)
    artifact_dir = artifact_location(args, space)
    store = None
    if artifact_dir.is_dir():
        store = optuna.artifacts.FileSystemArtifactStore(str(artifact_dir))
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        logger.warning(
            "optuna-dashboard has no login: anyone who reaches %s:%d can read "
            "and change these studies",
            args.host,
            args.port,
        )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET

    class Server(WSGIServer):
        address_family = family

    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        server = make_server(
            args.host, args.port, app, server_class=Server, handler_class=_Requests
        )
    except OSError as error:
        raise StudyError(
            f"cannot listen on {args.host}:{args.port}: {error.strerror}; "
            "choose another --port"
        ) from None
    logger.info(
        "serving %s%s at http://%s:%d (Ctrl-C stops it)",
        shown_location(location),
        f" with plots from {artifact_dir}" if store else "",
        f"[{args.host}]" if family == socket.AF_INET6 else args.host,
        args.port,
    )
    # The server runs in a thread of its own: wsgiref turns an exception
    # raised inside a request into an error page, so Ctrl-C or SIGTERM that
    # arrived mid-request would otherwise leave the server running.
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        logger.info("dashboard stopped")
    finally:
        server.server_close()
    return 0
