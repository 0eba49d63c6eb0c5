"""Run a space: one Optuna study per depth, presets first, then sampled designs.

Studies live in one storage per space (see :mod:`blocksearch.storage`), and
each trial runs the objective of :mod:`blocksearch.objective`. Runs resume:
finished trials count toward the requested total, and presets already in a
study are not enqueued again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocksearch.artifacts import TrialArtifacts
from blocksearch.data import Dataset
from blocksearch.errors import StudyError
from blocksearch.objective import (
    RunReporter,
    StudyPlan,
    _SilentReporter,
    make_objective,
    trial_label,
)
from blocksearch.space import Space
from blocksearch.storage import (
    check_storage,
    default_storage_path,
    open_storage,
    study_depths,
    study_name,
)
from blocksearch.strategy import (
    PrunerSetting,
    SamplerSetting,
    choose_sampler,
    make_pruner,
)

__all__ = [
    "RunReporter",
    "StudyPlan",
    "check_storage",
    "default_storage_path",
    "open_storage",
    "run_space",
    "run_study",
    "study_depths",
    "study_name",
    "trial_label",
]

logger = logging.getLogger("blocksearch")

#: Selection protocols: a held-out validation split, or the published one.
PROTOCOLS = ("validation", "paper")

#: States of trials that count toward ``--trials``.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


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
    complete or pruned. A preset whose trials all failed is enqueued again.
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


def _log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    attrs = trial.user_attrs
    accuracies = attrs.get("test_accuracy", [])
    losses = attrs.get("train_loss", [])
    value = "-" if trial.value is None else f"{trial.value:.2%}"
    if "duplicate_of" in attrs:
        outcome = f"repeats trial {attrs['duplicate_of']}: objective {value}"
    elif accuracies:
        outcome = (
            f"after {len(accuracies)} epochs: objective {value}, "
            f"test accuracy {accuracies[-1]:.2%}, loss {losses[-1]:.4f}"
        )
    else:
        outcome = "before its first epoch"
    try:
        best = study.best_trial
        best_text = f"best objective {best.value:.2%} ({trial_label(best)})"
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
    """Run the study of ``plan`` until it contains ``plan.trials`` finished trials."""
    reporter = reporter or _SilentReporter()
    space = plan.space
    name = study_name(space, plan.depth)
    settings = {
        "space": space.name,
        "depth": plan.depth,
        "epochs": plan.epochs,
        "seed": plan.seed,
        "dataset": data.name,
        "protocol": plan.protocol,
        "validation_size": (
            0 if data.validation_labels is None else len(data.validation_labels)
        ),
        "repeats": plan.repeats,
        "objective": (
            f"mean over {plan.repeats} seeds of the "
            f"{plan.objective_metric.replace('_', ' ')} after the last epoch"
        ),
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
        make_objective(plan, data, device, reporter, artifacts),
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
    repeats: int = 1,
    protocol: str = "validation",
    validation_size: int | None = None,
    device: str = "cpu",
    reporter: RunReporter | None = None,
    artifact_dir: str | Path | None = None,
) -> list[optuna.Study]:
    """Run one study per depth of ``space``; unset options take the space's values.

    Under the default ``"validation"`` protocol, ``validation_size`` images
    (default: the space's value) are held out of the train split and the
    objective is the accuracy on them; the test split is measured but never
    selects. ``"paper"`` trains on the whole train split and selects on test
    accuracy, as the published experiment did. With ``repeats`` above 1 each
    design trains with that many seeds and the objective is their mean.

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
            repeats=repeats,
            protocol=protocol,
        )
        for depth in (depths if depths is not None else space.depths)
    ]
    if protocol not in PROTOCOLS:
        raise StudyError(
            f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    if repeats < 1:
        raise StudyError(f"repeats must be at least 1, got {repeats!r}")
    if protocol == "validation":
        # One split per run, seeded by the space, so every trial of every
        # study selects on the same held-out images.
        size = validation_size if validation_size is not None else space.validation_size
        data = data.split_validation(size, seed=space.train.seed)
    data = data.to(device)
    artifacts = TrialArtifacts(Path(artifact_dir)) if artifact_dir else None
    return [
        run_study(
            plan, storage, data, device=device, reporter=reporter, artifacts=artifacts
        )
        for plan in plans
    ]
