"""Run a space: one Optuna study per depth, presets first, then sampled designs.

Studies live in one storage per space (see :mod:`blocksearch.storage`), and
each trial runs the objective of :mod:`blocksearch.objective`. Runs resume:
finished trials count toward the requested total, and presets already in a
study are not enqueued again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocksearch.artifacts import TrialArtifacts
from blocksearch.coordination import (
    Heartbeat,
    fail_stale_trials,
    retry_once,
    study_lock,
)
from blocksearch.data import Dataset
from blocksearch.errors import BlocksearchError, StudyError
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
from blocksearch.strategy import choose_sampler, make_pruner

__all__ = [
    "RunReporter",
    "StudyPlan",
    "check_storage",
    "default_storage_path",
    "open_storage",
    "open_study",
    "plan_space",
    "prepare_data",
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

#: Seconds without a heartbeat after which a running trial counts as stale.
DEFAULT_STALE_AFTER = 120.0

#: A preset that failed this often, not counting interruptions, is not
#: enqueued again.
MAX_PRESET_FAILURES = 2

#: A worker stops after this many failed trials in a row: the cause is then
#: not one design but the set-up.
MAX_FAILURES_IN_ROW = 3

#: Distance between the sampler seeds of parallel workers.
SEED_STRIDE = 10_007

#: Study user attribute: what trials depend on in the space that created it.
SPACE_ATTR = "space_fingerprint"


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


def _enqueue_presets(study: optuna.Study, plan: StudyPlan, budget: int) -> list[str]:
    """Enqueue the presets, then the given designs, that the study lacks, at
    most ``budget`` of them, and return their labels.

    One counts as present when a trial of it is waiting, running, complete or
    pruned. One whose trials all failed is enqueued again, unless two of them
    failed for a reason other than an interruption: a design that crashes its
    worker every time is not tried forever.
    """
    space = plan.space
    wanted = [("preset", name, space.presets[name]) for name in plan.preset_names]
    wanted += [("given", design, design) for design in plan.designs]
    present, crashes = set(), {}
    for trial in study.get_trials(deepcopy=False):
        for kind in ("preset", "given"):
            key = (kind, trial.user_attrs.get(kind))
            if trial.state != TrialState.FAIL:
                present.add(key)
            elif trial.user_attrs.get("failure") != "interrupted":
                crashes[key] = crashes.get(key, 0) + 1
    missing = [
        (kind, name, design)
        for kind, name, design in wanted
        if (kind, name) not in present
        and crashes.get((kind, name), 0) < MAX_PRESET_FAILURES
    ]
    enqueued = missing[: max(0, budget)]
    for kind, name, design in enqueued:
        params = space.search.params_for(design)
        study.enqueue_trial(params, user_attrs={kind: name})
    return [name if kind == "preset" else f"given {name}" for kind, name, _ in enqueued]


def _warn_untrained_designs(study: optuna.Study, plan: StudyPlan) -> None:
    """Warn about the plan's presets and the designs of ``--designs`` that
    the full study left out."""
    trials = study.get_trials(deepcopy=False)
    groups = (
        ("preset", "preset", plan.preset_names),
        ("given", "given design", plan.designs),
    )
    for attr, kind, expected in groups:
        present = {t.user_attrs.get(attr) for t in trials}
        missing = [name for name in expected if name not in present]
        if missing:
            logger.warning(
                "%s is full at %d trials without %d %s(s) (%s); run again "
                "with --trials %d to train them",
                study.study_name,
                plan.trials,
                len(missing),
                kind,
                "; ".join(missing),
                plan.trials + len(missing),
            )


def _log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    attrs = trial.user_attrs
    accuracies = attrs.get("test_accuracy", [])
    losses = attrs.get("train_loss", [])
    value = "-" if trial.value is None else f"{trial.value:.2%}"
    if "duplicate_of" in attrs:
        outcome = f"repeats trial {attrs['duplicate_of']}: objective {value}"
    elif accuracies:
        outcome = (
            f"after {len(accuracies)} epoch{'' if len(accuracies) == 1 else 's'}: "
            f"objective {value}, "
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


def study_settings(plan: StudyPlan, data: Dataset) -> dict[str, object]:
    """Return the settings that every trial of ``plan``'s study must share."""
    return {
        "space": plan.space.name,
        "depth": plan.depth,
        "epochs": plan.epochs,
        "seed": plan.seed,
        "dataset": data.name,
        "protocol": plan.protocol,
        "validation_size": (
            0 if data.validation_labels is None else len(data.validation_labels)
        ),
        "repeats": plan.repeats,
        "inexact": list(plan.train_config().inexact_options()),
        "objective": (
            f"mean over {plan.repeats} seeds of the "
            f"{plan.objective_metric.replace('_', ' ')} after the last epoch"
        ),
    }


def open_study(
    plan: StudyPlan, storage: optuna.storages.BaseStorage, data: Dataset
) -> optuna.Study:
    """Create ``plan``'s study, or load it and check that this run matches it.

    Raises:
        StudyError: If the stored study was run with other settings or
            created from a different space.
    """
    space = plan.space
    name = study_name(space, plan.depth)
    settings = study_settings(plan, data)
    worker = plan.worker
    if worker == 0 and _has_running_trials(storage, name):
        # Another worker is active: a seed of its own keeps this worker from
        # sampling the very designs that worker samples.
        worker = os.getpid()
    seed = plan.seed + plan.depth + SEED_STRIDE * worker
    sampler, reason = choose_sampler(plan.sampler, space.search, plan.trials, seed)
    logger.info("%s sampler: %s", name, reason)
    pruner = make_pruner(plan.pruner, warmup=plan.warmup_epochs, epochs=plan.epochs)
    # Loading first, rather than create_study(load_if_exists=True), appends
    # nothing to a journal file when the study exists.
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
            pass  # another worker created it a moment ago
        else:
            for key, value in settings.items():
                study.set_user_attr(key, value)
            study.set_user_attr(SPACE_ATTR, space.fingerprint())
            if space.source:
                study.set_user_attr("space_file", space.source)
            return study
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner
    )
    _check_study_settings(study, settings)
    _check_space(study, space)
    return study


def _has_running_trials(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return bool(storage.get_all_trials(study_id, states=(TrialState.RUNNING,)))


def _check_space(study: optuna.Study, space: Space) -> None:
    """Reject a run whose space differs, in what trials depend on, from the
    space that created the study."""
    stored = study.user_attrs.get(SPACE_ATTR)
    if not isinstance(stored, dict):
        return  # created before blocksearch stored spaces
    current = space.fingerprint()
    changed = [
        f"{key}: stored {stored.get(key)!r}, now {value!r}"
        for key, value in current.items()
        if stored.get(key) != value
    ]
    if not changed:
        return
    origin = study.user_attrs.get("space_file")
    where = f" (file {origin!r})" if origin else ""
    raise StudyError(
        f"study {study.study_name!r} was created from a different space{where}; "
        f"changed: {'; '.join(changed)}. Its trials would not be comparable with "
        "new ones: restore the space file, or keep the new space apart with "
        "another name or --storage"
    )


def run_study(
    plan: StudyPlan,
    storage: optuna.storages.BaseStorage,
    data: Dataset,
    *,
    device: str = "cpu",
    reporter: RunReporter | None = None,
    artifacts: TrialArtifacts | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    wait: bool = True,
) -> optuna.Study:
    """Run trials of ``plan``'s study until it contains ``plan.trials`` of them.

    Any number of workers may run this on one storage at once: each trial is
    asked for under :func:`~blocksearch.coordination.study_lock`, which counts
    complete, pruned and running trials of every worker against
    ``plan.trials``. A running trial silent for ``stale_after`` seconds is
    marked failed and its design enqueued again once. When the study is full
    but trials still run elsewhere, the worker waits for them with ``wait``,
    since one may turn stale and need a retry; without, it returns.

    Raises:
        StudyError: If the study conflicts with this run, or three trials in a
            row fail with an unexpected error.
        KeyboardInterrupt: On Ctrl-C or SIGTERM, after the running trial is
            marked failed as interrupted.
    """
    reporter = reporter or _SilentReporter()
    study = open_study(plan, storage, data)
    finished = len(study.get_trials(deepcopy=False, states=COUNTED_STATES))
    reporter.study_started(plan, finished)
    if finished >= plan.trials:
        logger.info(
            "%s already has %d finished trials; nothing to run",
            study.study_name,
            finished,
        )
        _warn_untrained_designs(study, plan)
        return study

    objective = make_objective(plan, data, device, reporter, artifacts)
    poll = min(5.0, max(0.2, stale_after / 4))
    failures_in_row = 0
    waiting_logged = False
    while True:
        with study_lock(storage, study.study_name):
            fail_stale_trials(study, stale_after)
            trials = study.get_trials(deepcopy=False)
            active = sum(
                t.state in (*COUNTED_STATES, TrialState.RUNNING) for t in trials
            )
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            trial = None
            if active < plan.trials:
                enqueued = _enqueue_presets(study, plan, plan.trials - active - waiting)
                if enqueued:
                    logger.info(
                        "%s: enqueued %s", study.study_name, ", ".join(enqueued)
                    )
                trial = study.ask()
        if trial is None:
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if not running or not wait:
                _warn_untrained_designs(study, plan)
                return study
            if not waiting_logged:
                logger.info(
                    "%s is full; waiting for %d trial(s) running in other workers",
                    study.study_name,
                    len(running),
                )
                waiting_logged = True
            time.sleep(poll)
            continue

        frozen = _run_trial(study, trial, objective, max(0.1, stale_after / 6))
        _log_trial(study, frozen)
        reporter.trial_finished(plan, frozen)
        if frozen.state == TrialState.FAIL:
            failures_in_row += 1
            if failures_in_row >= MAX_FAILURES_IN_ROW:
                raise StudyError(
                    f"{study.study_name}: {failures_in_row} trials in a row failed; "
                    f"the last one with: {frozen.user_attrs.get('failure')}. "
                    "Fix the cause and run again; the failed trials stay recorded"
                )
        else:
            failures_in_row = 0


def _run_trial(
    study: optuna.Study, trial: optuna.Trial, objective, heartbeat_interval: float
) -> FrozenTrial:
    """Run ``objective`` on ``trial`` with a heartbeat and record how it ended.

    A pruned trial keeps its last reported value. Any exception marks the
    trial failed, with the reason as its ``failure`` attribute. After an
    unexpected exception the design is enqueued again once, and the study
    goes on. Interruptions and blocksearch's own errors are raised again.
    """
    state, value = TrialState.FAIL, None
    try:
        with Heartbeat(study._storage, trial._trial_id, heartbeat_interval):
            value = objective(trial)
        state = TrialState.COMPLETE
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except (KeyboardInterrupt, BlocksearchError) as error:
        if not isinstance(error, KeyboardInterrupt):
            trial.set_user_attr("failure", str(error))
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as error:  # one broken trial must not stop the study
        reason = f"{type(error).__name__}: {error}"
        trial.set_user_attr("failure", reason)
        logger.error(
            "%s trial %d failed: %s",
            study.study_name,
            trial.number,
            reason,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
    frozen = study.tell(
        trial, value if state == TrialState.COMPLETE else None, state=state
    )
    if state == TrialState.FAIL:
        retry_once(study, frozen)
    return frozen


def plan_space(
    space: Space,
    *,
    depths: Sequence[int] | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    repeats: int = 1,
    protocol: str = "validation",
    **options: object,
) -> list[StudyPlan]:
    """Return one :class:`StudyPlan` per depth; unset options take the space's
    values. ``options`` are further :class:`StudyPlan` fields; None keeps the
    space's value.

    Raises:
        StudyError: If the protocol is unknown or ``repeats`` is below 1.
    """
    if protocol not in PROTOCOLS:
        raise StudyError(
            f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}"
        )
    if repeats < 1:
        raise StudyError(f"repeats must be at least 1, got {repeats!r}")
    fields = {key: value for key, value in options.items() if value is not None}
    fields.setdefault("sampler", space.sampler)
    fields.setdefault("pruner", space.pruner)
    fields.setdefault("warmup_epochs", space.warmup_epochs)
    return [
        StudyPlan(
            space=space,
            depth=depth,
            trials=trials if trials is not None else space.trials,
            epochs=epochs if epochs is not None else space.train.epochs,
            seed=seed if seed is not None else space.train.seed,
            repeats=repeats,
            protocol=protocol,
            **fields,
        )
        for depth in (depths if depths is not None else space.depths)
    ]


def prepare_data(
    space: Space,
    data: Dataset,
    *,
    protocol: str = "validation",
    validation_size: int | None = None,
    device: str = "cpu",
) -> Dataset:
    """Hold out the validation split of ``protocol`` and move data to ``device``.

    The split is seeded by the space, so every worker and every run of the
    space selects on the same held-out images.
    """
    if protocol == "validation":
        size = validation_size if validation_size is not None else space.validation_size
        data = data.split_validation(size, seed=space.train.seed)
    return data.to(device)


def run_space(
    space: Space,
    data: Dataset,
    *,
    storage: optuna.storages.BaseStorage,
    depths: Sequence[int] | None = None,
    trials: int | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    repeats: int = 1,
    protocol: str = "validation",
    validation_size: int | None = None,
    device: str = "cpu",
    reporter: RunReporter | None = None,
    artifact_dir: str | Path | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
    **options: object,
) -> list[optuna.Study]:
    """Run one study per depth of ``space``; unset options take the space's values.

    Under the default ``"validation"`` protocol, ``validation_size`` images
    (default: the space's value) are held out of the train split and the
    objective is the accuracy on them; the test split is measured but never
    selects. ``"paper"`` trains on the whole train split and selects on test
    accuracy, as the published experiment did. With ``repeats`` above 1 each
    design trains with that many seeds and the objective is their mean.
    ``options`` are further :class:`StudyPlan` fields, such as ``sampler``,
    ``pruner``, ``warmup_epochs``, ``repeat_duplicates`` and the speed options
    ``grad_norm_every``, ``bf16`` and ``compile``.

    Runs resume: trials already finished in ``storage`` count toward
    ``trials``, and presets already there are not enqueued again. Several
    processes may run the same space on one storage at once (see
    :func:`run_study`). With ``artifact_dir``, every trained trial gets plots
    and a dashboard note, and the best weights of each study are kept there.
    """
    plans = plan_space(
        space,
        depths=depths,
        trials=trials,
        epochs=epochs,
        seed=seed,
        repeats=repeats,
        protocol=protocol,
        **options,
    )
    data = prepare_data(
        space, data, protocol=protocol, validation_size=validation_size, device=device
    )
    artifacts = TrialArtifacts(Path(artifact_dir)) if artifact_dir else None
    # A worker whose study is full goes on to the next depth, and only at the
    # end waits for trials other workers still run, to retry any that stall.
    options = {
        "device": device,
        "artifacts": artifacts,
        "stale_after": stale_after,
    }
    studies = [
        run_study(plan, storage, data, reporter=reporter, wait=False, **options)
        for plan in plans
    ]
    for plan, study in zip(plans, studies, strict=True):
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_study(plan, storage, data, wait=True, **options)
    return studies
