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
    with pytest.raises(SpaceError, match="of 2 stages"):
        PlacementSearch().params_for("linear bn + tanh")


def test_placement_rejects_unknown_position():
    with pytest.raises(SpaceError, match=r"invalid placement 'skip\+head'"):
        PlacementSearch(choices=("skip+head",))


def test_placement_rejects_unknown_activation():
    with pytest.raises(SpaceError, match="activation 'tahn' is not a registered op"):
        PlacementSearch(activation="tahn")


def test_placement_search_size():
    assert PlacementSearch().size() == 64
    assert PlacementSearch(stages=1, choices=("post", "skip")).size() == 2


def _region_search():
    from blocksearch.placements import RegionSearch

    return RegionSearch(PlacementSearch(), max_regions=3)


def test_region_search_fixed_parameter_names():
    search = _region_search()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names = set()
    for _ in range(15):
        trial = study.ask()
        search.suggest(trial)
        names.add(tuple(sorted(trial.params)))
        study.tell(trial, 0.0)
    assert len(names) == 1
    (only,) = names
    assert "regions" in only
    assert "boundary2" in only
    assert "region3_stage2" in only
    assert all(isinstance(v, (str, int)) for v in trial.params.values())


def test_region_search_designs_fit_every_depth():
    from blocksearch.dsl import parse_design

    search = _region_search()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        design = parse_design(search.suggest(trial))
        for depth in (1, 2, 15, 20, 25, 50):
            assert len(design.blocks(depth)) == depth
        study.tell(trial, 0.0)


def test_region_search_design_regions():
    search = _region_search()
    design = search.design([["post", "post"], ["skip", "skip"]], ["1/3"])
    assert str(design) == f"1/3: {PRESETS['control']}; {PRESETS['exp1']}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_region_search_presets_round_trip(preset):
    search = _region_search()
    study = optuna.create_study()
    study.enqueue_trial(search.params_for(PRESETS[preset]))
    assert search.suggest(study.ask()) == PRESETS[preset]


def test_region_search_sampled_designs_round_trip():
    search = _region_search()
    sampling = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    replay = optuna.create_study()
    regions = set()
    for _ in range(200):
        design = search.suggest(sampling.ask())
        regions.add(design.count(";") + 1)
        replay.enqueue_trial(search.params_for(design))
        assert search.suggest(replay.ask()) == design
    assert regions == {1, 2, 3}


@pytest.mark.parametrize(
    "design",
    [
        "1/5: exp1; control",  # no allowed boundary
        "3: exp1; control",  # a block count, not a fraction
        "1/4: exp1; 1/4: exp2; 1/4: exp1; control",  # four regions
        "1/2: exp1; linear bn + relu | linear bn + relu",  # not a placement
    ],
)
def test_region_search_rejects_foreign_design(design):
    with pytest.raises(SpaceError, match="not in this"):
        _region_search().params_for(design)
