"""Print the tables of docs/reproduction.md from the exports in this folder.

Each export is the output of ``blocksearch show --format json`` for one of
the storages that ``reproduce.sh`` fills (see ``reproduce.sh export``). This
script reads only those files, so anyone can check the tables against them.
Published figures are those of the reference experiment (tanh, seed 42).

Usage::

    python docs/results/compare.py > /tmp/tables.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import scipy.stats

HERE = Path(__file__).resolve().parent
PRESETS = ("control", "exp1", "exp2")
#: Marks a figure from the second machine (see the page's "Runs" section).
SECOND_MARK = "†"

#: Published training loss and test accuracy (percent) at 20 blocks, by epoch.
PUBLISHED_20 = {
    "control": {10: (1.7462, 35.27), 20: (1.3084, 46.04), 30: (1.0995, 49.80),
                50: (0.8614, 50.01)},
    "exp1": {10: (1.5791, 41.95), 20: (1.1911, 50.64), 30: (0.9734, 50.00),
             50: (0.7265, 52.16)},
    "exp2": {10: (1.6451, 40.73), 20: (1.2559, 49.87), 30: (1.0549, 50.29),
             50: (0.8413, 50.64)},
}  # fmt: skip
#: Published maximum test accuracy (percent) and dead-neuron rate (percent).
PUBLISHED_MAX_20 = {"control": 51.20, "exp1": 52.49, "exp2": 51.55}
PUBLISHED_DEAD_20 = {"control": 0.21, "exp1": 0.02, "exp2": 0.08}
#: Published epoch-50 training loss and maximum test accuracy, by depth.
PUBLISHED_DEPTHS = {
    15: {"control": (0.7826, 51.44), "exp1": (0.6698, 53.12), "exp2": (0.7145, 52.30)},
    20: {"control": (0.8614, 51.20), "exp1": (0.7265, 52.49), "exp2": (0.8413, 51.55)},
    25: {"control": (0.9536, 50.68), "exp1": (0.7991, 51.85), "exp2": (0.9184, 51.06)},
    50: {"control": (1.0808, 48.07), "exp1": (1.4391, 21.82), "exp2": (1.1236, 48.24)},
}  # fmt: skip


def load(name: str) -> dict[str, dict]:
    """Return the studies of export ``name``.json by study name; {} if absent."""
    path = HERE / f"{name}.json"
    if not path.is_file():
        return {}
    return {record["study"]: record for record in json.loads(path.read_text())}


def rows_by_design(record: dict) -> dict[str, dict]:
    return {row["design"]: row for row in record["rows"]}


def overlay(first: dict, second: dict, epochs: int = 50) -> dict[str, dict]:
    """Return the studies of ``first``, completed from ``second``.

    A row of ``second`` that ran all ``epochs`` epochs replaces the row of
    the same design in ``first`` when that one is missing or shorter. Rows
    taken from ``second`` are marked ``second``.
    """
    merged = {name: dict(record) for name, record in first.items()}
    for name, record in second.items():
        rows = rows_by_design(merged[name]) if name in merged else {}
        for row in record["rows"]:
            old = rows.get(row["design"])
            if row.get("epochs") == epochs and (old is None or old["epochs"] != epochs):
                rows[row["design"]] = dict(row, second=True)
        merged[name] = dict(record, rows=list(rows.values()))
    return merged


def mark(row: dict) -> str:
    """Return the footnote mark of a row trained on the second machine."""
    return SECOND_MARK if row.get("second") else ""


def cell(loss: float | None, accuracy: float | None) -> str:
    if loss is None or accuracy is None:
        return "-"
    return f"{loss:.4f} / {100 * accuracy:.2f}%"


def inline_code(text: str | None) -> str:
    """Return ``text`` as inline code for a table cell, its pipes escaped."""
    return "`" + (text or "?").replace("|", "\\|") + "`"


def wall_time(record: dict) -> str:
    """Return the summed wall time of the rows of ``record``, per machine."""
    parts = []
    for second in (False, True):
        seconds = sum(
            row.get("seconds") or 0
            for row in record["rows"]
            if bool(row.get("second")) == second
        )
        if seconds:
            parts.append(f"{seconds / 3600:.2f} h{SECOND_MARK if second else ''}")
    return " + ".join(parts) or "-"


def table_depth20(paper: dict) -> list[str]:
    record = paper.get("tanh_placements-depth20")
    if record is None:
        return ["(the depth-20 study has not run yet)"]
    rows = rows_by_design(record)
    head = "| 20 blocks | " + " | ".join(f"{p} published | {p} here" for p in PRESETS)
    lines = [head + " |", "|---" * 7 + "|"]
    for epoch in (10, 20, 30, 50):
        cells = []
        for preset in PRESETS:
            loss, accuracy = PUBLISHED_20[preset][epoch]
            row = rows.get(preset, {})
            ours = cell(row.get(f"loss@{epoch}"), row.get(f"accuracy@{epoch}"))
            cells += [f"{loss:.4f} / {accuracy:.2f}%", ours + mark(row)]
        lines.append(f"| epoch {epoch} | " + " | ".join(cells) + " |")
    for label, published, key in (
        ("max accuracy", PUBLISHED_MAX_20, "max_accuracy"),
        ("dead-neuron rate", PUBLISHED_DEAD_20, "dead_neuron_rate"),
    ):
        cells = []
        for preset in PRESETS:
            row = rows.get(preset, {})
            value = row.get(key) if row.get("epochs") == 50 else None
            ours = "-" if value is None else f"{100 * value:.2f}%"
            cells += [f"{published[preset]:.2f}%", ours]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for preset in PRESETS:
        seconds = rows.get(preset, {}).get("seconds")
        cells += ["-", "-" if seconds is None else f"{seconds / 60:.0f} min"]
    lines.append("| wall time | " + " | ".join(cells) + " |")
    return lines


def partial_cell(row: dict) -> str:
    """Return the maximum accuracy so far of a trial short of 50 epochs."""
    epochs = row.get("epochs", 0)
    if not epochs or row.get("max_accuracy") is None:
        return "-"
    return f"max {100 * row['max_accuracy']:.2f}% after {epochs} of 50 epochs"


def table_depths(paper: dict) -> list[str]:
    head = "| blocks | " + " | ".join(f"{p} published | {p} here" for p in PRESETS)
    lines = [head + " | wall time here |", "|---" * 8 + "|"]
    for depth, published in PUBLISHED_DEPTHS.items():
        record = paper.get(f"tanh_placements-depth{depth}")
        rows = rows_by_design(record) if record else {}
        cells = []
        for preset in PRESETS:
            loss, accuracy = published[preset]
            row = rows.get(preset, {})
            if row.get("epochs") == 50:
                ours = cell(row.get("loss@50"), row.get("max_accuracy")) + mark(row)
            else:
                ours = partial_cell(row) if row else "-"
            cells += [f"{loss:.4f} / {accuracy:.2f}%", ours]
        time = wall_time(record) if record else "-"
        lines.append(f"| {depth} | " + " | ".join(cells) + f" | {time} |")
    return lines


def against_control(rows: dict[str, dict]) -> list[str]:
    """Return one line per design with seeds: its lead over control and the
    one-sided Welch's t-test of it."""
    control = rows.get("control", {}).get("objective_per_seed")
    lines = []
    for label, row in rows.items():
        values = row.get("objective_per_seed")
        if label == "control" or not control or not values:
            continue
        difference = 100 * (statistics.mean(values) - statistics.mean(control))
        welch = scipy.stats.ttest_ind(
            values, control, equal_var=False, alternative="greater"
        )
        lines.append(
            f"\n{label} vs control: {difference:+.2f} points, one-sided Welch's "
            f"t-test p = {welch.pvalue:.3f}."
        )
    return lines


def table_seeds(seeds: dict) -> list[str]:
    record = seeds.get("tanh_placements-depth20")
    if record is None:
        return ["(the seed study has not run yet)"]
    lines = [
        "| design | seeds | epoch-20 loss, mean | epoch-20 test accuracy, "
        "mean ± std | description |",
        "|---|---|---|---|---|",
    ]
    for label, row in rows_by_design(record).items():
        if row["objective"] is None:
            continue
        lines.append(
            f"| {label} | {row['seeds']} | {row['loss@20']:.4f} | "
            f"{100 * row['objective']:.2f}% ± {100 * (row['objective_std'] or 0):.2f}"
            f" | {inline_code(row['description'])} |"
        )
    lines += against_control(rows_by_design(record))
    lines.append(f"\nWall time: {wall_time(record)}.")
    return lines


def table_relu(relu: dict) -> list[str]:
    record = relu.get("relu_placements-depth20")
    if record is None:
        return ["(the ReLU study has not run yet)"]
    rows = rows_by_design(record)
    lines = [
        "| preset | epoch-20 loss / test accuracy | max accuracy |",
        "|---|---|---|",
    ]
    finals = []
    for preset in PRESETS:
        row = rows.get(preset)
        if row is None or row.get("epochs") != 20:
            lines.append(f"| {preset} | - | - |")
            continue
        finals.append(row["accuracy@20"])
        lines.append(
            f"| {preset} | {cell(row['loss@20'], row['accuracy@20'])} | "
            f"{100 * row['max_accuracy']:.2f}% |"
        )
    if len(finals) == len(PRESETS):
        spread = 100 * (max(finals) - min(finals))
        lines.append(f"\nSpread of epoch-20 accuracy: {spread:.2f} points.")
    lines.append(f"\nWall time: {wall_time(record)}.")
    return lines


def table_search(search: dict, top: int = 10) -> list[str]:
    """Return the presets and the ``top`` best sampled designs, then counts."""
    record = search.get("tanh_placements-depth20")
    if record is None:
        return ["(the search has not run yet)"]
    lines = [
        "| design | trial | state | validation accuracy | test accuracy "
        "(last epoch) | epochs | description |",
        "|---|---|---|---|---|---|---|",
    ]
    presets = [row for row in record["rows"] if row["design"] in PRESETS]
    sampled = [row for row in record["rows"] if row["design"] not in PRESETS]
    for row in presets + sampled[:top]:
        last = row.get(f"accuracy@{record['checkpoints'][-1]}")
        objective = row["objective"]
        lines.append(
            f"| {row['design']} | {row['trial']} | {row['state']} | "
            f"{'-' if objective is None else f'{100 * objective:.2f}%'} | "
            f"{'-' if last is None else f'{100 * last:.2f}%'} | "
            f"{row['epochs']} | {inline_code(row['description'])} |"
        )
    lines.append(
        f"\n{record['finished_trials']} finished trials: {len(record['rows'])} "
        f"trained all {record['checkpoints'][-1]} epochs, "
        f"{record['pruned_trials']} pruned, and {record['reused_trials']} that "
        "sampled a design already trained and reused its value. The trials "
        f"trained to the end took {wall_time(record)} summed over trials."
    )
    return lines


def table_retrain(retrain: dict, seeds: dict) -> list[str]:
    """Return the retrained designs with their seeds, tested against control."""
    record = retrain.get("tanh_placements-depth20")
    if record is None:
        return ["(the retraining has not run yet)"]
    rows = rows_by_design(record)
    lines = [
        "| design | epoch-20 test accuracy per seed (42, 43, 44) | mean ± std "
        "| description |",
        "|---|---|---|---|",
    ]
    for label, row in rows.items():
        seeds_here = row.get("objective_per_seed") or []
        lines.append(
            f"| {label} | {', '.join(f'{100 * v:.2f}%' for v in seeds_here)} | "
            f"{100 * row['objective']:.2f}% ± {100 * (row['objective_std'] or 0):.2f} "
            f"| {inline_code(row['description'])} |"
        )

    lines += against_control(rows)
    control = rows.get("control", {}).get("objective_per_seed")

    earlier = rows_by_design(seeds.get("tanh_placements-depth20", {"rows": []}))
    before = earlier.get("control", {}).get("objective_per_seed")
    if control and before:
        lines.append(
            "\nControl of the seed study (first machine), per seed: "
            + ", ".join(f"{100 * v:.2f}%" for v in before)
            + "."
        )
    lines.append(f"\nWall time: {wall_time(record)}, summed over the two trials.")
    return lines


def main() -> int:
    paper, seeds = overlay(load("paper"), load("paper-2")), load("seeds")
    relu, search, retrain = load("relu"), load("search"), load("retrain")
    sections = [
        ("20 blocks, published protocol", table_depth20(paper)),
        ("Depth: epoch-50 loss / max accuracy", table_depths(paper)),
        ("Seed noise at 20 blocks, 20 epochs", table_seeds(seeds)),
        ("ReLU at 20 blocks, 20 epochs", table_relu(relu)),
        ("Search at 20 blocks", table_search(search)),
        ("The search's best design with 3 seeds", table_retrain(retrain, seeds)),
    ]
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
