"""The objective of a study: build, train and record one trial's design.

Every trial stores, as user attributes, its canonical description (``dsl``),
its design hash, its preset name (``preset``, presets only) or its given
design (``given``, designs passed with ``--designs`` only), the seed, the
depth, its gradient-path statistics and, per epoch, the training loss, test
accuracy, learning rate, dead-neuron rate and the gradient norm at every
block's output. The objective value is reported to Optuna after every epoch,
so pruners work and the dashboard draws learning curves.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, replace
from typing import Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocksearch.analysis import analyse
from blocksearch.artifacts import TrialArtifacts
from blocksearch.builder import ResidualMLP
from blocksearch.data import Dataset
from blocksearch.dsl import canonical, design_hash, parse_design
from blocksearch.errors import DslError, SpaceError
from blocksearch.space import Space
from blocksearch.strategy import PrunerSetting, SamplerSetting
from blocksearch.train import (
    EpochMetrics,
    NonFiniteLossError,
    TrainConfig,
    seed_everything,
    train,
)

__all__ = ["RunReporter", "StudyPlan", "make_objective", "trial_label"]

logger = logging.getLogger("blocksearch")


@dataclass(frozen=True)
class StudyPlan:
    """Settings of one study: its space, depth, budget and selection rules."""

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
    #: Seeds per design: ``seed``, ``seed + 1``, ...; the objective is the mean.
    repeats: int = 1
    #: "validation": select on a held-out part of the train split;
    #: "paper": train on all of it and select on the test split.
    protocol: str = "validation"
    #: Gather block gradient norms on every k-th step only (a measurement
    #: setting: training does not depend on it).
    grad_norm_every: int = 1
    #: Inexact speed options; see :class:`~blocksearch.train.TrainConfig`.
    bf16: bool = False
    compile: bool = False
    #: Canonical designs trained after the presets, like them never pruned
    #: or deduplicated: a design to measure again, e.g. a search's best.
    designs: tuple[str, ...] = ()
    #: Names of the presets to train, or None for all of the space's presets.
    presets: tuple[str, ...] | None = None
    #: Number of this worker among those started together (0 for the first).
    #: It seeds the sampler apart, so that parallel workers sample apart.
    worker: int = 0

    def train_config(self) -> TrainConfig:
        """Return the space's training protocol with this plan's budget,
        seed and speed options."""
        return replace(
            self.space.train,
            epochs=self.epochs,
            seed=self.seed,
            grad_norm_every=self.grad_norm_every,
            autocast_bf16=self.bf16,
            compile=self.compile,
        )

    @property
    def objective_metric(self) -> str:
        """User attribute whose last value is the objective of one seed."""
        return (
            "validation_accuracy" if self.protocol == "validation" else "test_accuracy"
        )

    @property
    def preset_names(self) -> tuple[str, ...]:
        """Names of the presets this plan trains."""
        return tuple(self.space.presets) if self.presets is None else self.presets

    @property
    def seeds(self) -> list[int]:
        return [self.seed + k for k in range(self.repeats)]


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
    """Return a trial's preset name, ``given #N`` for a design passed with
    ``--designs``, or ``#N`` for a sampled trial."""
    preset = trial.user_attrs.get("preset")
    if preset:
        return str(preset)
    if trial.user_attrs.get("given"):
        return f"given #{trial.number}"
    return f"#{trial.number}"


def make_objective(
    plan: StudyPlan,
    data: Dataset,
    device: str,
    reporter: RunReporter,
    artifacts: TrialArtifacts | None,
):
    space = plan.space
    config = plan.train_config()
    inexact = list(config.inexact_options())

    def objective(trial: optuna.Trial) -> float:
        # design: sampled, or fixed by the enqueued parameters of a preset or
        # a given design; fixed designs are neither rejected, reused nor pruned
        design = canonical(space.search.suggest(trial))
        preset = trial.user_attrs.get("preset")
        expected = (
            space.presets.get(preset) if preset else trial.user_attrs.get("given")
        )
        fixed = preset is not None or expected is not None
        if fixed and design != expected:
            raise SpaceError(
                f"{trial_label(trial)} is {expected!r} but the search produced "
                f"{design!r} from its parameters; params_for and suggest of "
                "the space's search disagree"
            )
        parsed = parse_design(design)
        identity = design_hash(parsed.at_depth(plan.depth))
        trial.set_user_attr("dsl", design)
        trial.set_user_attr("design_hash", identity)
        trial.set_user_attr("seed", plan.seed)
        trial.set_user_attr("depth", plan.depth)
        trial.set_user_attr("path_stats", _path_stats(design, plan.depth))
        if inexact:
            trial.set_user_attr("inexact", inexact)
        reporter.trial_started(plan, trial, trial_label(trial))

        # constraints: a design the space forbids is recorded, never trained
        problem = space.constraint(parsed) if space.constraint else None
        if problem is not None and not fixed:
            trial.set_user_attr("rejected", problem)
            raise optuna.TrialPruned(f"rejected by the space's constraint: {problem}")

        # duplicates: a design already trained at this depth and seed is not
        # trained again; the trial records the earlier trial and its value
        if not fixed and not plan.repeat_duplicates:
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

        # train every seed in lockstep, reporting the mean after each epoch
        try:
            value, model = _train_seeds(
                trial, plan, data, design, config, device, reporter, artifacts, fixed
            )
        except NonFiniteLossError as error:
            trial.set_user_attr("failure", str(error))
            logger.warning("trial %d (%s): %s", trial.number, design, error)
            raise optuna.TrialPruned(str(error)) from None
        except KeyboardInterrupt:
            # Optuna marks the trial failed and re-raises; log it once here.
            trial.set_user_attr("failure", "interrupted")
            logger.warning(
                "%s trial %d (%s) interrupted after %d epochs; marked failed",
                trial.study.study_name,
                trial.number,
                trial_label(trial),
                len(trial.user_attrs.get("train_loss", [])),
            )
            raise

        # artifacts: plots and note for the dashboard, weights if best so far
        if artifacts is not None:
            artifacts.attach(trial, _note(trial, design))
            artifacts.keep_if_best(trial, value, model)
        return value

    return objective


#: Per-epoch metrics stored for every trial, averaged over seeds when repeated.
HISTORY_KEYS = (
    "train_loss",
    "test_accuracy",
    "validation_accuracy",
    "learning_rate",
    "dead_neuron_rate",
    "block_grad_norms",
)


def _mean(values: list) -> object:
    """Return the mean of numbers, or the elementwise mean of equal-length lists."""
    if isinstance(values[0], list):
        return [sum(column) / len(column) for column in zip(*values, strict=True)]
    return sum(values) / len(values)


def _train_seeds(
    trial: optuna.Trial,
    plan: StudyPlan,
    data: Dataset,
    design: str,
    config: TrainConfig,
    device: str,
    reporter: RunReporter,
    artifacts: TrialArtifacts | None,
    fixed: bool,
) -> tuple[float, ResidualMLP]:
    """Train ``design`` once per seed of ``plan`` and return the mean objective
    and the first seed's model. A ``fixed`` design (a preset or a given design)
    is never pruned.

    Raises:
        optuna.TrialPruned: When the pruner stops a sampled trial.
        NonFiniteLossError: When any seed's loss becomes NaN or infinite.
    """
    space = plan.space

    # models: seeded so a design at a seed always starts from the same weights
    models, runs = [], []
    for seed in plan.seeds:
        seed_everything(seed)
        model = ResidualMLP(
            design,
            depth=plan.depth,
            width=space.width,
            in_features=data.in_features,
            num_classes=data.num_classes,
            activation=space.activation,
        )
        models.append(model)
        runs.append(train(model, data, replace(config, seed=seed), device))

    # epochs: one step of every seed's generator, then one report of the mean
    histories = [{key: [] for key in HISTORY_KEYS} for _ in plan.seeds]
    value = math.nan
    for epoch_metrics in zip(*runs, strict=True):
        for history, metrics in zip(histories, epoch_metrics, strict=True):
            _append(history, metrics)
        for key in HISTORY_KEYS:
            latest = [h[key][-1] for h in histories]
            if latest[0] is None:  # no validation split under the paper protocol
                continue
            stored = trial.user_attrs.get(key, [])
            trial.set_user_attr(key, [*stored, _mean(latest)])
        if plan.repeats > 1:
            runs_record = [
                {"seed": seed, **history}
                for seed, history in zip(plan.seeds, histories, strict=True)
            ]
            trial.set_user_attr("runs", runs_record)
        per_seed = [h[plan.objective_metric][-1] for h in histories]
        value = sum(per_seed) / len(per_seed)
        epoch = epoch_metrics[0].epoch
        trial.report(value, epoch)
        reporter.epoch_finished(plan, epoch_metrics[0])
        if not fixed and trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", epoch)
            if artifacts is not None:
                artifacts.attach(trial, _note(trial, design))
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    per_seed = [h[plan.objective_metric][-1] for h in histories]
    trial.set_user_attr("objective_per_seed", per_seed)
    trial.set_user_attr(
        "objective_std", statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    )
    return value, models[0]


def _append(history: dict[str, list], metrics: EpochMetrics) -> None:
    history["train_loss"].append(metrics.train_loss)
    history["test_accuracy"].append(metrics.test_accuracy)
    history["validation_accuracy"].append(metrics.validation_accuracy)
    history["learning_rate"].append(metrics.learning_rate)
    history["dead_neuron_rate"].append(metrics.dead_neuron_rate)
    history["block_grad_norms"].append(list(metrics.block_grad_norms))


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
