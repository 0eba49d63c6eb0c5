"""Tables of study results: presets beside the best sampled designs.

The layout follows the reference experiment's tables: training loss and test
accuracy at chosen epochs, the maximum test accuracy over all epochs, and the
dead-neuron rate after the last epoch. Functions here return rich renderables
or text; the caller prints them.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Sequence

import numpy as np
import optuna
import scipy.stats
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from blocksearch.study import trial_label

__all__ = [
    "THEORY_STATISTICS",
    "checkpoint_epochs",
    "compare_to_control",
    "rank_correlation",
    "records_csv",
    "records_markdown",
    "select_rows",
    "study_records",
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


def study_records(study: optuna.Study, top: int = 5) -> dict[str, object]:
    """Return the rows of a study's results table as plain values.

    The record holds the study name, the number of finished trials, the
    checkpoint epochs and one row per preset and top sampled design. Each row
    holds its ``design`` label, ``trial`` number, ``state``, ``objective``,
    the number of ``seeds``, their ``objective_std`` and, with several seeds,
    the ``objective_per_seed`` in seed order (else None), per checkpoint epoch
    ``loss@E`` and ``accuracy@E``, then ``max_accuracy``, ``dead_neuron_rate``,
    ``description``, the ``epochs`` trained and the trial's wall time in
    ``seconds``. Accuracies and rates are fractions, and a missing value is
    None. ``comparison`` is the sentence of :func:`compare_to_control`, or
    None.
    """
    trials = select_rows(study, top)
    epochs_run = max(
        (len(t.user_attrs.get("train_loss", [])) for t in trials), default=0
    )
    checkpoints = checkpoint_epochs(epochs_run)
    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
    )
    rows = []
    for trial in trials:
        losses = trial.user_attrs.get("train_loss", [])
        accuracies = trial.user_attrs.get("test_accuracy", [])
        dead = trial.user_attrs.get("dead_neuron_rate", [])
        per_seed = trial.user_attrs.get("objective_per_seed", [])
        row: dict[str, object] = {
            "design": trial_label(trial),
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "objective": trial.value,
            "seeds": len(per_seed) or (1 if trial.value is not None else 0),
            "objective_std": trial.user_attrs.get("objective_std"),
            "objective_per_seed": per_seed if len(per_seed) > 1 else None,
        }
        for epoch in checkpoints:
            row[f"loss@{epoch}"] = _or_none(_at(losses, epoch))
            row[f"accuracy@{epoch}"] = _or_none(_at(accuracies, epoch))
        row["max_accuracy"] = max(accuracies) if accuracies else None
        row["dead_neuron_rate"] = dead[-1] if dead else None
        row["description"] = trial.user_attrs.get("dsl")
        row["epochs"] = len(losses)
        start, end = trial.datetime_start, trial.datetime_complete
        row["seconds"] = (
            round((end - start).total_seconds(), 1) if start and end else None
        )
        rows.append(row)
    return {
        "study": study.study_name,
        "finished_trials": len(finished),
        # Rows leave out pruned trials and reused duplicates, so count them here.
        "pruned_trials": sum(t.state == TrialState.PRUNED for t in finished),
        "reused_trials": sum("duplicate_of" in t.user_attrs for t in finished),
        "checkpoints": checkpoints,
        "rows": rows,
        "comparison": compare_to_control(study, top),
    }


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _percent_cell(value: object) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


def _loss_cell(value: object) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def _text_cells(record: dict) -> tuple[list[str], list[list[str]]]:
    """Return header and rows of a study record as formatted text."""
    header = ["design", "trial", "state"]
    header += [f"epoch {e} loss / acc" for e in record["checkpoints"]]
    header += ["max acc", "dead", "objective", "description"]
    rows = []
    for row in record["rows"]:
        cells = [row["design"], str(row["trial"]), row["state"]]
        for epoch in record["checkpoints"]:
            loss = _loss_cell(row[f"loss@{epoch}"])
            cells.append(f"{loss} / {_percent_cell(row[f'accuracy@{epoch}'])}")
        cells.append(_percent_cell(row["max_accuracy"]))
        cells.append(_percent_cell(row["dead_neuron_rate"]))
        cells.append(_objective_cell(row))
        cells.append(row["description"] or "?")
        rows.append(cells)
    return header, rows


def _objective_cell(row: dict) -> str:
    if row["objective"] is None:
        return "-"
    text = _percent_cell(row["objective"])
    if row["seeds"] > 1 and row["objective_std"] is not None:
        text += f" ± {100 * row['objective_std']:.2f} ({row['seeds']} seeds)"
    return text


def compare_to_control(study: optuna.Study, top: int = 5) -> str | None:
    """Say whether the best sampled design beats the control preset beyond the
    seed-to-seed spread, by Welch's t-test on the per-seed objectives.

    Returns None when either side has fewer than 2 seeds, because the spread
    is then unknown.
    """
    rows = select_rows(study, top)
    control = next((t for t in rows if t.user_attrs.get("preset") == "control"), None)
    sampled = [t for t in rows if not t.user_attrs.get("preset")]
    if control is None or not sampled:
        return None
    best = sampled[0]
    a = best.user_attrs.get("objective_per_seed", [])
    b = control.user_attrs.get("objective_per_seed", [])
    if len(a) < 2 or len(b) < 2:
        return None
    difference = 100 * (statistics.mean(a) - statistics.mean(b))
    result = scipy.stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    verdict = (
        "beats control beyond the seed-to-seed spread"
        if result.pvalue < 0.05
        else "does not beat control beyond the seed-to-seed spread"
    )
    return (
        f"best design {trial_label(best)} vs control: {difference:+.2f} points; "
        f"one-sided Welch's t-test p = {result.pvalue:.3f} "
        f"({len(a)} and {len(b)} seeds): {verdict} at the 5% level"
    )


def _title(record: dict) -> str:
    return f"{record['study']}: {record['finished_trials']} finished trials"


def study_table(study: optuna.Study, top: int = 5) -> Table:
    """Build the rich results table of one study."""
    record = study_records(study, top)
    header, rows = _text_cells(record)
    table = Table(title=_title(record), title_justify="left")
    for index, name in enumerate(header):
        numeric = 3 <= index < len(header) - 1 or index == 1
        table.add_column(name, justify="right" if numeric else "left")
    for cells in rows:
        table.add_row(*cells)
    return table


def records_markdown(records: Sequence[dict]) -> str:
    """Format study records as Markdown: a heading and a table per study."""
    parts = []
    for record in records:
        header, rows = _text_cells(record)
        lines = [f"### {_title(record)}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for cells in rows:
            escaped = [c.replace("|", "\\|") for c in cells]
            lines.append("| " + " | ".join(escaped) + " |")
        if record.get("comparison"):
            lines += ["", record["comparison"]]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def records_csv(records: Sequence[dict]) -> str:
    """Format study records as CSV, one line per row, with a ``study`` column.

    Columns are the union of every study's keys, because studies may have run
    different numbers of epochs; a missing value is an empty field, and a list
    of values is one field with the values separated by ``;``.
    """
    columns = ["study"]
    for record in records:
        for row in record["rows"]:
            columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        for row in record["rows"]:
            fields = {
                key: ";".join(map(str, value)) if isinstance(value, list) else value
                for key, value in row.items()
            }
            writer.writerow({"study": record["study"], **fields})
    return buffer.getvalue()


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
        if "activations" in t.user_attrs.get("path_stats", {})
        and "duplicate_of" not in t.user_attrs
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
