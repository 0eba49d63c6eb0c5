"""Tables of study results: presets beside the best sampled designs.

The layout follows the reference experiment's tables: training loss and test
accuracy at chosen epochs, the maximum test accuracy over all epochs, and the
dead-neuron rate after the last epoch. Functions here return rich renderables;
the caller prints them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from blocksearch.study import trial_label

__all__ = [
    "THEORY_STATISTICS",
    "checkpoint_epochs",
    "rank_correlation",
    "select_rows",
    "study_table",
    "theory_table",
]

#: Epochs the reference tables show, when a study ran that long.
REFERENCE_EPOCHS = (10, 20, 30, 50)


def checkpoint_epochs(max_epoch: int) -> list[int]:
    """Return the epochs to show: reference epochs up to ``max_epoch``, and the last."""
    epochs = [e for e in REFERENCE_EPOCHS if e <= max_epoch]
    if max_epoch >= 1 and max_epoch not in epochs:
        epochs.append(max_epoch)
    return epochs


def select_rows(study: optuna.Study, top: int = 5) -> list[FrozenTrial]:
    """Return the study's preset trials in preset order, then its ``top`` best others.

    For each preset the most recent finished trial is shown. Sampled trials
    are ranked by their objective value, complete trials only.
    """
    trials = study.get_trials(deepcopy=False)
    presets: dict[str, FrozenTrial] = {}
    for trial in trials:
        preset = trial.user_attrs.get("preset")
        if preset and trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            presets[preset] = trial
        elif preset and preset not in presets and trial.state == TrialState.RUNNING:
            presets[preset] = trial
    sampled = [
        t
        for t in trials
        if not t.user_attrs.get("preset")
        and "duplicate_of" not in t.user_attrs
        and t.state == TrialState.COMPLETE
        and t.value is not None
    ]
    sampled.sort(key=lambda t: t.value, reverse=True)
    return list(presets.values()) + sampled[:top]


def _at(values: Sequence[float], epoch: int) -> float:
    return values[epoch - 1] if len(values) >= epoch else math.nan


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def _loss(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def study_table(study: optuna.Study, top: int = 5) -> Table:
    """Build the results table of one study."""
    rows = select_rows(study, top)
    epochs_run = max((len(t.user_attrs.get("train_loss", [])) for t in rows), default=0)
    checkpoints = checkpoint_epochs(epochs_run)
    finished = len(
        study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )
    )

    table = Table(
        title=f"{study.study_name}: {finished} finished trials",
        title_justify="left",
    )
    table.add_column("design")
    table.add_column("trial", justify="right")
    table.add_column("state")
    for epoch in checkpoints:
        table.add_column(f"epoch {epoch}\nloss / acc", justify="right")
    table.add_column("max acc", justify="right")
    table.add_column("dead", justify="right")
    table.add_column("description")

    for trial in rows:
        losses = trial.user_attrs.get("train_loss", [])
        accuracies = trial.user_attrs.get("test_accuracy", [])
        dead = trial.user_attrs.get("dead_neuron_rate", [])
        cells = [
            f"{_loss(_at(losses, e))} / {_percent(_at(accuracies, e))}"
            for e in checkpoints
        ]
        table.add_row(
            trial_label(trial),
            str(trial.number),
            trial.state.name.lower(),
            *cells,
            _percent(max(accuracies, default=math.nan)),
            _percent(dead[-1] if dead else math.nan),
            trial.user_attrs.get("dsl", "?"),
        )
    return table


#: Path statistics held against the objective, by label: how each is read from
#: a trial's ``path_stats`` user attribute.
THEORY_STATISTICS: dict[str, Callable[[dict], float]] = {
    "mean activations per path": lambda s: s["activations"]["mean"],
    "min activations per path": lambda s: s["activations"]["min"],
    "max activations per path": lambda s: s["activations"]["max"],
    "mean weight layers per path": lambda s: s["weight_layers"]["mean"],
    "skip-chain activations": lambda s: s["skip_chain_activations"],
    "activation-free path fraction": lambda s: s["activation_free_fraction"],
}


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Return 1-based ranks, ties sharing the mean of their ranks."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="stable")
    ranks = np.empty(len(array))
    position = 0
    while position < len(array):
        end = position
        while end + 1 < len(array) and array[order[end + 1]] == array[order[position]]:
            end += 1
        ranks[order[position : end + 1]] = (position + end) / 2 + 1
        position = end + 1
    return ranks


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Return Spearman's rank correlation of ``x`` and ``y``, ties averaged.

    NaN when fewer than 3 pairs exist or either side is constant, because the
    correlation is then undefined.
    """
    if len(x) != len(y):
        raise ValueError(f"got {len(x)} and {len(y)} values; give equal counts")
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def theory_table(study: optuna.Study) -> Table:
    """Build the table of rank correlations between path statistics and outcome.

    Each complete trial that was trained (duplicates left out) and has path
    statistics contributes one pair per statistic.
    """
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "path_stats" in t.user_attrs and "duplicate_of" not in t.user_attrs
    ]
    values = [t.value for t in trials]
    table = Table(
        title=f"{study.study_name}: path statistics against the objective",
        title_justify="left",
        caption="Spearman rank correlation; '-' where fewer than 3 trials or "
        "a constant statistic leave it undefined",
    )
    table.add_column("statistic")
    table.add_column("rank correlation", justify="right")
    table.add_column("trials", justify="right")
    for label, read in THEORY_STATISTICS.items():
        statistic = [read(t.user_attrs["path_stats"]) for t in trials]
        rho = rank_correlation(statistic, values)
        table.add_row(
            label, "-" if math.isnan(rho) else f"{rho:+.3f}", str(len(trials))
        )
    return table
