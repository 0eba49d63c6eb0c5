"""Run a space: one Optuna study per depth, presets first, then sampled designs.

Studies live in one storage per space. The default is an Optuna journal file,
``studies/<space>.journal``: it takes appends from several processes under a
file lock, and optuna-dashboard reads it while a run is writing.

Every trial stores, as user attributes, its canonical description (``dsl``),
its preset name (``preset``, presets only), the seed, the depth and, per
epoch, the training loss, test accuracy, learning rate, dead-neuron rate and
the gradient norm at every block's output. Test accuracy is reported to Optuna
after every epoch, so pruners work and the dashboard draws learning curves.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocksearch.analysis import analyse
from blocksearch.artifacts import TrialArtifacts
from blocksearch.builder import ResidualMLP
from blocksearch.data import Dataset
from blocksearch.dsl import canonical, design_hash, parse_design
from blocksearch.errors import DslError, SpaceError, StudyError
from blocksearch.space import Space
from blocksearch.strategy import (
    PrunerSetting,
    SamplerSetting,
    choose_sampler,
    make_pruner,
)
from blocksearch.train import (
    EpochMetrics,
    NonFiniteLossError,
    seed_everything,
    train,
)

__all__ = [
    "RunReporter",
    "StudyPlan",
    "check_storage",
    "default_storage_path",
    "open_storage",
    "run_space",
    "study_depths",
    "study_name",
]

logger = logging.getLogger("blocksearch")

#: States of trials that count toward ``--trials``.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def study_name(space: Space | str, depth: int) -> str:
    """Return the study name of ``space`` at ``depth``: ``<space>-depth<N>``."""
    name = space if isinstance(space, str) else space.name
    return f"{name}-depth{depth}"


def default_storage_path(space: Space, studies_dir: str | Path = "studies") -> Path:
    """Return the journal file that holds the studies of ``space``."""
    return Path(studies_dir) / f"{space.name}.journal"


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_storage(location: str | Path) -> None:
    """Reject a storage location that cannot hold studies, without writing to it.

    Raises:
        StudyError: If a database URL names an in-memory database, or a
            journal path is a folder, another kind of file, or a journal whose
            last record is incomplete.
    """
    location = str(location)
    if "://" in location:
        if location.rstrip("/") in ("sqlite:", "sqlite:/") or ":memory:" in location:
            raise StudyError(
                f"storage {location!r} is an in-memory database, so the studies "
                "would be lost when the run ends; give a file, e.g. "
                "sqlite:///studies/x.db"
            )
        return
    path = Path(location)
    if path.is_dir():
        raise StudyError(
            f"storage {location!r} is a folder; give a journal file path such as "
            f"{str(path / 'studies.journal')!r}"
        )
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_HEADER))
            file.seek(0)
            first_line = file.readline()
            file.seek(-1, 2)
            last_byte = file.read(1)
    except OSError as error:
        raise StudyError(
            f"cannot read storage file {location!r}: {error.strerror}"
        ) from None
    if head == _SQLITE_HEADER:
        raise StudyError(
            f"storage file {location!r} is an SQLite database; pass it as a URL: "
            f"--storage sqlite:///{path}"
        )
    try:
        record = json.loads(first_line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise StudyError(
            f"storage file {location!r} is not an Optuna journal file; blocksearch "
            "does not write to it. Pass --storage with a new or journal file"
        )
    if last_byte != b"\n":
        raise StudyError(
            f"storage file {location!r} ends with an incomplete record, left by "
            "a write that was cut off; appending would damage it. Keep a copy, "
            "then delete the text after the last line break"
        )


def open_storage(location: str | Path) -> optuna.storages.BaseStorage:
    """Open study storage from a database URL or a journal file path.

    ``location`` is either a SQLAlchemy URL such as ``sqlite:///studies.db`` or
    ``postgresql://user@host/db``, or the path of an Optuna journal file, which
    is created with its folder when missing. The location is checked with
    :func:`check_storage` first.

    Raises:
        StudyError: If the location fails the checks, the URL is malformed,
            the database cannot be reached, or the journal file cannot be
            created.
    """
    check_storage(location)
    location = str(location)
    if "://" in location:
        try:
            return optuna.storages.RDBStorage(location)
        except Exception as error:  # SQLAlchemy raises many unrelated types
            reason = str(error).strip().rstrip(".")
            raise StudyError(
                f"cannot open storage {location!r}: {reason}. Check the URL "
                "(e.g. sqlite:///studies/x.db) and that the server is reachable"
            ) from None

    path = Path(location)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
    except OSError as error:
        raise StudyError(
            f"cannot create storage file {str(path)!r}: {error.strerror}. "
            "Choose a writable location with --storage or --studies-dir"
        ) from None
    return optuna.storages.JournalStorage(backend)


def study_depths(storage: optuna.storages.BaseStorage, space: Space) -> list[int]:
    """Return the depths of the studies of ``space`` in ``storage``, sorted."""
    prefix = f"{space.name}-depth"
    depths = []
    for name in optuna.get_all_study_names(storage):
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix.isdigit():
            depths.append(int(suffix))
    return sorted(depths)


@dataclass(frozen=True)
class StudyPlan:
    """What to run in one study."""

    space: Space
    depth: int
    trials: int  # total per study, counting finished trials already there
    epochs: int
    seed: int
    #: Train a sampled design again even when an equal one already finished.
    repeat_duplicates: bool = False
    sampler: SamplerSetting = "auto"
    pruner: PrunerSetting = "median"
    warmup_epochs: int = 2


class RunReporter(Protocol):
    """Receives progress events; the command line draws them with rich."""

    def study_started(self, plan: StudyPlan, finished: int) -> None: ...

    def trial_started(
        self, plan: StudyPlan, trial: optuna.Trial, label: str
    ) -> None: ...

    def epoch_finished(self, plan: StudyPlan, metrics: EpochMetrics) -> None: ...

    def trial_finished(self, plan: StudyPlan, trial: FrozenTrial) -> None: ...


class _SilentReporter:
    def study_started(self, plan: StudyPlan, finished: int) -> None:
        pass

    def trial_started(self, plan: StudyPlan, trial: optuna.Trial, label: str) -> None:
        pass

    def epoch_finished(self, plan: StudyPlan, metrics: EpochMetrics) -> None:
        pass

    def trial_finished(self, plan: StudyPlan, trial: FrozenTrial) -> None:
        pass


def trial_label(trial: FrozenTrial | optuna.Trial) -> str:
    """Return a trial's preset name, or ``#N`` for a sampled trial."""
    preset = trial.user_attrs.get("preset")
    return str(preset) if preset else f"#{trial.number}"


def _check_study_settings(study: optuna.Study, settings: dict[str, object]) -> None:
    """Reject a run whose settings differ from those stored on the study."""
    recorded = study.user_attrs
    changed = [
        f"{key}: stored {recorded[key]!r}, requested {value!r}"
        for key, value in settings.items()
        if key in recorded and recorded[key] != value
    ]
    if changed:
        raise StudyError(
            f"study {study.study_name!r} was run with other settings "
            f"({'; '.join(changed)}). Trials of one study must be comparable: "
            "rerun with the stored settings, or pass --storage with a new file"
        )


def _enqueue_presets(study: optuna.Study, space: Space, budget: int) -> list[str]:
    """Enqueue the presets that the study lacks, at most ``budget`` of them.

    A preset counts as present when a trial with its name is waiting, running,
    complete or pruned; a preset whose trials all failed is enqueued again.
    """
    present = {
        t.user_attrs.get("preset")
        for t in study.get_trials(deepcopy=False)
        if t.state != TrialState.FAIL
    }
    missing = [name for name in space.presets if name not in present]
    enqueued = missing[: max(0, budget)]
    for name in enqueued:
        params = space.search.params_for(space.presets[name])
        study.enqueue_trial(params, user_attrs={"preset": name})
    return enqueued


def _make_objective(
    plan: StudyPlan,
    data: Dataset,
    device: str,
    reporter: RunReporter,
    artifacts: TrialArtifacts | None,
):
    space = plan.space
    config = replace(space.train, epochs=plan.epochs, seed=plan.seed)

    def objective(trial: optuna.Trial) -> float:
        # design: sampled, or fixed by the enqueued preset parameters
        design = canonical(space.search.suggest(trial))
        preset = trial.user_attrs.get("preset")
        if preset is not None and design != space.presets.get(preset):
            raise SpaceError(
                f"preset {preset!r} is {space.presets.get(preset)!r} but the "
                f"search produced {design!r} from its parameters; "
                "params_for and suggest of the space's search disagree"
            )
        parsed = parse_design(design)
        identity = design_hash(parsed.at_depth(plan.depth))
        trial.set_user_attr("dsl", design)
        trial.set_user_attr("design_hash", identity)
        trial.set_user_attr("seed", plan.seed)
        trial.set_user_attr("depth", plan.depth)
        trial.set_user_attr("path_stats", _path_stats(design, plan.depth))
        reporter.trial_started(plan, trial, trial_label(trial))

        # constraints: a design the space forbids is recorded, never trained
        problem = space.constraint(parsed) if space.constraint else None
        if problem is not None and preset is None:
            trial.set_user_attr("rejected", problem)
            raise optuna.TrialPruned(f"rejected by the space's constraint: {problem}")

        # duplicates: a design already trained at this depth and seed is not
        # trained again; the trial records the earlier trial and its value
        if preset is None and not plan.repeat_duplicates:
            earlier = _finished_twin(trial, identity)
            if earlier is not None:
                trial.set_user_attr("duplicate_of", earlier.number)
                logger.info(
                    "trial %d repeats trial %d (%s); not trained again",
                    trial.number,
                    earlier.number,
                    design,
                )
                return float(earlier.value)

        # model: seeded so a design at a seed always starts from the same weights
        seed_everything(plan.seed)
        model = ResidualMLP(
            design,
            depth=plan.depth,
            width=space.width,
            in_features=data.in_features,
            num_classes=data.num_classes,
            activation=space.activation,
        )

        # train, reporting every epoch
        history: dict[str, list] = {
            "train_loss": [],
            "test_accuracy": [],
            "learning_rate": [],
            "dead_neuron_rate": [],
            "block_grad_norms": [],
        }
        accuracy = math.nan
        try:
            for metrics in train(model, data, config, device):
                history["train_loss"].append(metrics.train_loss)
                history["test_accuracy"].append(metrics.test_accuracy)
                history["learning_rate"].append(metrics.learning_rate)
                history["dead_neuron_rate"].append(metrics.dead_neuron_rate)
                history["block_grad_norms"].append(list(metrics.block_grad_norms))
                for key, values in history.items():
                    trial.set_user_attr(key, values)
                accuracy = metrics.test_accuracy
                trial.report(accuracy, metrics.epoch)
                reporter.epoch_finished(plan, metrics)
                if preset is None and trial.should_prune():
                    trial.set_user_attr("pruned_at_epoch", metrics.epoch)
                    if artifacts is not None:
                        artifacts.attach(trial, _note(trial, design))
                    raise optuna.TrialPruned(f"pruned after epoch {metrics.epoch}")
        except NonFiniteLossError as error:
            trial.set_user_attr("failure", str(error))
            logger.warning("trial %d (%s): %s", trial.number, design, error)
            raise optuna.TrialPruned(str(error)) from None
        except KeyboardInterrupt:
            # Optuna marks the trial failed and re-raises; say so once here.
            trial.set_user_attr("failure", "interrupted")
            logger.warning(
                "%s trial %d (%s) interrupted after %d epochs; marked failed",
                trial.study.study_name,
                trial.number,
                trial_label(trial),
                len(history["train_loss"]),
            )
            raise

        # artifacts: plots and note for the dashboard, weights if best so far
        if artifacts is not None:
            artifacts.attach(trial, _note(trial, design))
            artifacts.keep_if_best(trial, accuracy, model)
        return accuracy

    return objective


def _note(trial: optuna.Trial, design: str) -> str:
    """Return the Markdown note shown beside a trial in optuna-dashboard."""
    stats = trial.user_attrs.get("path_stats", {})
    lines = [f"**{trial_label(trial)}**", "", f"`{design}`", ""]
    if "activations" in stats:
        activations, weights = stats["activations"], stats["weight_layers"]
        lines += [
            f"- paths through the blocks: 2^{stats['log2_paths']:g}",
            f"- activations per path: min {activations['min']}, "
            f"mean {activations['mean']:g}, max {activations['max']}",
            f"- weight layers per path: min {weights['min']}, "
            f"mean {weights['mean']:g}, max {weights['max']}",
            f"- activations on the pure skip chain: {stats['skip_chain_activations']}",
        ]
    return "\n".join(lines)


def _path_stats(design: str, depth: int) -> dict[str, object]:
    try:
        stats = analyse(design, depth).to_dict()
    except DslError as error:  # too many stages for exact statistics
        return {"error": str(error)}
    # Path counts exceed the integers that JSON readers such as the dashboard's
    # JavaScript hold exactly, so the count is stored as text.
    stats["paths"] = str(stats["paths"])
    return stats


def _finished_twin(trial: optuna.Trial, identity: str) -> FrozenTrial | None:
    """Return the first complete trial of the same design hash, if any."""
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.user_attrs.get("design_hash") == identity:
            return other
    return None


def _log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    attrs = trial.user_attrs
    accuracies = attrs.get("test_accuracy", [])
    losses = attrs.get("train_loss", [])
    if "duplicate_of" in attrs:
        outcome = f"repeats trial {attrs['duplicate_of']}, accuracy {trial.value:.2%}"
    elif accuracies:
        outcome = (
            f"after {len(accuracies)} epochs: accuracy {accuracies[-1]:.2%}, "
            f"loss {losses[-1]:.4f}"
        )
    else:
        outcome = "before its first epoch"
    try:
        best = study.best_trial
        best_text = f"best {best.value:.2%} ({trial_label(best)})"
    except ValueError:
        best_text = "no complete trial yet"
    logger.info(
        "%s trial %d (%s) %s %s; %s; %s",
        study.study_name,
        trial.number,
        trial_label(trial),
        trial.state.name.lower(),
        outcome,
        best_text,
        attrs.get("dsl", "?"),
    )


def run_study(
    plan: StudyPlan,
    storage: optuna.storages.BaseStorage,
    data: Dataset,
    *,
    device: str = "cpu",
    reporter: RunReporter | None = None,
    artifacts: TrialArtifacts | None = None,
) -> optuna.Study:
    """Run the study of ``plan`` until it holds ``plan.trials`` finished trials."""
    reporter = reporter or _SilentReporter()
    space = plan.space
    name = study_name(space, plan.depth)
    settings = {
        "space": space.name,
        "depth": plan.depth,
        "epochs": plan.epochs,
        "seed": plan.seed,
        "dataset": data.name,
        "objective": "test accuracy after the last epoch",
    }
    sampler, reason = choose_sampler(
        plan.sampler, space.search, plan.trials, plan.seed + plan.depth
    )
    logger.info("%s sampler: %s", name, reason)
    pruner = make_pruner(plan.pruner, warmup=plan.warmup_epochs, epochs=plan.epochs)
    # Loading first, rather than create_study(load_if_exists=True), appends
    # nothing to a journal file when the study exists.
    study = None
    if name not in optuna.get_all_study_names(storage):
        try:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction="maximize",
                sampler=sampler,
                pruner=pruner,
            )
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another process created it a moment ago
        else:
            for key, value in settings.items():
                study.set_user_attr(key, value)
    if study is None:
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=sampler, pruner=pruner
        )
        _check_study_settings(study, settings)

    finished = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
    remaining = plan.trials - finished
    reporter.study_started(plan, finished)
    if remaining <= 0:
        logger.info(
            "%s already has %d finished trials; nothing to run",
            study.study_name,
            finished,
        )
        return study

    enqueued = _enqueue_presets(study, space, remaining)
    if enqueued:
        logger.info("%s: enqueued presets %s", study.study_name, ", ".join(enqueued))

    def on_trial_finished(study: optuna.Study, trial: FrozenTrial) -> None:
        _log_trial(study, trial)
        reporter.trial_finished(plan, trial)

    study.optimize(
        _make_objective(plan, data, device, reporter, artifacts),
        n_trials=remaining,
        callbacks=[
            on_trial_finished,
            optuna.study.MaxTrialsCallback(plan.trials, states=COUNTED_STATES),
        ],
    )
    return study


def run_space(
    space: Space,
    data: Dataset,
    *,
    storage: optuna.storages.BaseStorage,
    depths: Sequence[int] | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    repeat_duplicates: bool = False,
    sampler: SamplerSetting | None = None,
    pruner: PrunerSetting | None = None,
    warmup_epochs: int | None = None,
    device: str = "cpu",
    reporter: RunReporter | None = None,
    artifact_dir: str | Path | None = None,
) -> list[optuna.Study]:
    """Run one study per depth of ``space``; unset options take the space's values.

    Runs resume: trials already finished in ``storage`` count toward
    ``trials``, and presets already there are not enqueued again. With
    ``artifact_dir``, every trained trial gets plots and a dashboard note, and
    the best weights of each study are kept there.
    """
    plans = [
        StudyPlan(
            space=space,
            depth=depth,
            trials=trials if trials is not None else space.trials,
            epochs=epochs if epochs is not None else space.train.epochs,
            seed=seed if seed is not None else space.train.seed,
            repeat_duplicates=repeat_duplicates,
            sampler=sampler if sampler is not None else space.sampler,
            pruner=pruner if pruner is not None else space.pruner,
            warmup_epochs=(
                warmup_epochs if warmup_epochs is not None else space.warmup_epochs
            ),
        )
        for depth in (depths if depths is not None else space.depths)
    ]
    data = data.to(device)
    artifacts = TrialArtifacts(Path(artifact_dir)) if artifact_dir else None
    return [
        run_study(
            plan, storage, data, device=device, reporter=reporter, artifacts=artifacts
        )
        for plan in plans
    ]
