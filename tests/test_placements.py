"""Placement search: sampled parameters, descriptions and presets agree."""

from __future__ import annotations

import itertools

import optuna
import pytest

from blocksearch.dsl import canonical
from blocksearch.errors import SpaceError
from blocksearch.placements import PLACEMENTS, PlacementSearch
from blocksearch.presets import PRESETS


@pytest.mark.parametrize(
    ("preset", "params"),
    [
        ("control", {"stage1": "post", "stage2": "post"}),
        ("exp1", {"stage1": "skip", "stage2": "skip"}),
        ("exp2", {"stage1": "post", "stage2": "skip"}),
    ],
)
def test_params_for_presets(preset, params):
    assert PlacementSearch().params_for(PRESETS[preset]) == params


def test_block_places_activation_everywhere():
    search = PlacementSearch(activation="relu", stages=1)
    text = str(search.block(["main+skip+post"]))
    assert text == "linear bn relu + relu -> relu"


def test_block_none_is_linear():
    assert str(PlacementSearch(stages=1).block(["none"])) == "linear bn + id"


def test_params_for_round_trips_every_placement():
    search = PlacementSearch()
    for pair in itertools.product(PLACEMENTS, repeat=2):
        design = str(search.block(pair))
        assert search.params_for(design) == {"stage1": pair[0], "stage2": pair[1]}


def test_suggest_uses_enqueued_params():
    search = PlacementSearch()
    study = optuna.create_study()
    study.enqueue_trial({"stage1": "post", "stage2": "skip"})
    trial = study.ask()
    assert search.suggest(trial) == canonical(PRESETS["exp2"])
    assert trial.params == {"stage1": "post", "stage2": "skip"}


def test_params_for_rejects_foreign_design():
    with pytest.raises(SpaceError, match="is not in this placement search"):
        PlacementSearch().params_for("linear bn + relu | linear bn + relu")


def test_params_for_rejects_wrong_stage_count():
    with pytest.raises(SpaceError, match="must have 2 stages"):
        PlacementSearch().params_for("linear bn + tanh")


def test_placement_rejects_unknown_position():
    with pytest.raises(SpaceError, match=r"invalid placement 'skip\+head'"):
        PlacementSearch(choices=("skip+head",))


def test_placement_rejects_unknown_activation():
    with pytest.raises(SpaceError, match="activation 'tahn' is not a registered op"):
        PlacementSearch(activation="tahn")
