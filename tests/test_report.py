"""Rank correlation used by the theory check."""

from __future__ import annotations

import math

import pytest

from blocksearch.report import checkpoint_epochs, rank_correlation


def test_rank_correlation_monotone():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_rank_correlation_ties_averaged():
    # ranks x: 1.5 1.5 3 4, y: 1 2 3 4 -> Pearson of ranks
    rho = rank_correlation([5, 5, 7, 9], [1, 2, 3, 4])
    assert rho == pytest.approx(0.9486832980505138)


def test_rank_correlation_undefined_cases():
    assert math.isnan(rank_correlation([1, 2], [1, 2]))
    assert math.isnan(rank_correlation([3, 3, 3], [1, 2, 3]))


def test_rank_correlation_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="got 2 and 3 values"):
        rank_correlation([1, 2], [1, 2, 3])


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [(2, [2]), (10, [10]), (25, [10, 20, 25]), (50, [10, 20, 30, 50])],
)
def test_checkpoint_epochs(epochs, expected):
    assert checkpoint_epochs(epochs) == expected


def _small_study():
    """A finished study built by hand: two presets and two sampled trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(study_name="small-depth2", direction="maximize")
    distribution = {"stage1": CategoricalDistribution(["post", "skip"])}
    rows = [
        ("control", "post", [2.0, 1.5], [0.25, 0.5], TrialState.COMPLETE),
        ("exp1", "skip", [1.8, 1.2], [0.3, 0.55], TrialState.COMPLETE),
        (None, "skip", [1.9, 1.1], [0.35, 0.6], TrialState.COMPLETE),
        (None, "post", [2.5], [0.1], TrialState.PRUNED),
    ]
    for preset, placement, losses, accuracies, state in rows:
        attrs = {
            "dsl": f"linear + {'tanh' if placement == 'skip' else 'id -> tanh'}",
            "train_loss": losses,
            "test_accuracy": accuracies,
            "dead_neuron_rate": [0.0, 0.125],
        }
        if preset:
            attrs["preset"] = preset
        study.add_trial(
            create_trial(
                state=state,
                value=accuracies[-1] if state == TrialState.COMPLETE else None,
                params={"stage1": placement},
                distributions=distribution,
                user_attrs=attrs,
                intermediate_values=dict(enumerate(accuracies, start=1)),
            )
        )
    return study


def test_report_markdown_expected():
    from blocksearch.report import records_markdown, study_records

    text = records_markdown([study_records(_small_study())])
    assert text == (
        "### small-depth2: 4 finished trials\n"
        "\n"
        "| design | trial | state | epoch 2 loss / acc | max acc | dead | objective "
        "| description |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| control | 0 | complete | 1.5000 / 50.00% | 50.00% | 12.50% | 50.00% "
        "| linear + id -> tanh |\n"
        "| exp1 | 1 | complete | 1.2000 / 55.00% | 55.00% | 12.50% | 55.00% "
        "| linear + tanh |\n"
        "| #2 | 2 | complete | 1.1000 / 60.00% | 60.00% | 12.50% | 60.00% "
        "| linear + tanh |\n"
    )


def test_report_csv_expected():
    from blocksearch.report import records_csv, study_records

    text = records_csv([study_records(_small_study())])
    assert text.splitlines() == [
        "study,design,trial,state,objective,seeds,objective_std,objective_per_seed,"
        "loss@2,accuracy@2,max_accuracy,dead_neuron_rate,description,epochs,seconds",
        "small-depth2,control,0,complete,0.5,1,,,1.5,0.5,0.5,0.125,"
        "linear + id -> tanh,2,0.0",
        "small-depth2,exp1,1,complete,0.55,1,,,1.2,0.55,0.55,0.125,linear + tanh,2,0.0",
        "small-depth2,#2,2,complete,0.6,1,,,1.1,0.6,0.6,0.125,linear + tanh,2,0.0",
    ]


def test_report_json_expected():
    import json

    from blocksearch.report import study_records

    record = json.loads(json.dumps(study_records(_small_study())))
    assert record["study"] == "small-depth2"
    assert record["finished_trials"] == 4
    assert record["pruned_trials"] == 1
    assert record["reused_trials"] == 0
    assert record["checkpoints"] == [2]
    assert [row["design"] for row in record["rows"]] == ["control", "exp1", "#2"]
    assert record["rows"][2] == {
        "design": "#2",
        "trial": 2,
        "state": "complete",
        "objective": 0.6,
        "seeds": 1,
        "objective_std": None,
        "objective_per_seed": None,
        "loss@2": 1.1,
        "accuracy@2": 0.6,
        "max_accuracy": 0.6,
        "dead_neuron_rate": 0.125,
        "description": "linear + tanh",
        "epochs": 2,
        "seconds": 0.0,  # create_trial starts and ends a trial at once
    }


def test_report_table_expected():
    import io

    from rich.console import Console

    from blocksearch.report import study_table

    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(study_table(_small_study()))
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    assert lines == [
        "small-depth2: 4 finished trials",
        "┏━━━━━━━━━┳━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┓",
        "┃ design  ┃ trial ┃ state    ┃ epoch 2 loss / acc ┃ max acc ┃   dead ┃ objective ┃ description         ┃",
        "┡━━━━━━━━━╇━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━┩",
        "│ control │     0 │ complete │    1.5000 / 50.00% │  50.00% │ 12.50% │    50.00% │ linear + id -> tanh │",
        "│ exp1    │     1 │ complete │    1.2000 / 55.00% │  55.00% │ 12.50% │    55.00% │ linear + tanh       │",
        "│ #2      │     2 │ complete │    1.1000 / 60.00% │  60.00% │ 12.50% │    60.00% │ linear + tanh       │",
        "└─────────┴───────┴──────────┴────────────────────┴─────────┴────────┴───────────┴─────────────────────┘",
    ]


def _study_with_seeds(best_seeds, control_seeds):
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    study = optuna.create_study(direction="maximize")
    distribution = {"stage1": CategoricalDistribution(["post", "skip"])}
    for preset, seeds in (("control", control_seeds), (None, best_seeds)):
        attrs = {"objective_per_seed": seeds, "dsl": "linear + tanh"}
        if preset:
            attrs["preset"] = preset
        study.add_trial(
            create_trial(
                value=sum(seeds) / len(seeds),
                params={"stage1": "post"},
                distributions=distribution,
                user_attrs=attrs,
            )
        )
    return study


def test_compare_to_control_beyond_spread():
    from blocksearch.report import compare_to_control

    text = compare_to_control(_study_with_seeds([0.60, 0.61, 0.62], [0.50, 0.51, 0.52]))
    assert text.startswith("best design #1 vs control: +10.00 points")
    assert "one-sided Welch's t-test" in text
    assert text.endswith("beats control beyond the seed-to-seed spread at the 5% level")


def test_compare_to_control_within_spread():
    from blocksearch.report import compare_to_control

    text = compare_to_control(_study_with_seeds([0.55, 0.45, 0.60], [0.50, 0.56, 0.44]))
    assert "does not beat control beyond the seed-to-seed spread" in text


def test_compare_to_control_needs_two_seeds():
    from blocksearch.report import compare_to_control

    assert compare_to_control(_study_with_seeds([0.6], [0.5])) is None


def test_records_carry_the_comparison():
    from blocksearch.report import records_csv, records_markdown, study_records

    study = _study_with_seeds([0.60, 0.61, 0.62], [0.50, 0.51, 0.52])
    record = study_records(study)
    assert record["comparison"].startswith("best design #1 vs control")
    assert record["rows"][0]["objective_per_seed"] == [0.50, 0.51, 0.52]
    assert ",0.5;0.51;0.52," in records_csv([record])
    assert record["comparison"] in records_markdown([record])
    single = study_records(_study_with_seeds([0.6], [0.5]))
    assert single["comparison"] is None
