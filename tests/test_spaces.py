"""The space files shipped in spaces/ and the sampler and pruner choice."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from blocksearch.dsl import parse_design
from blocksearch.errors import SpaceError
from blocksearch.presets import PRESETS, relu_presets
from blocksearch.space import load_space
from blocksearch.strategy import choose_sampler, make_pruner

SPACES = sorted(Path(__file__).parent.parent.joinpath("spaces").glob("*.py"))


def test_spaces_folder_has_the_three_spaces():
    names = {p.stem for p in SPACES}
    assert {"tanh_placements", "relu_placements", "heterogeneous"} <= names


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_space_samples_valid_networks(path):
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):
        trial = study.ask()
        design = parse_design(space.search.suggest(trial))
        for depth in space.depths:
            assert len(design.blocks(depth)) == depth
        assert all(isinstance(v, (str, int)) for v in trial.params.values())
        study.tell(trial, 0.0)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_space_presets_reachable(path):
    space = load_space(path)
    assert len(space.presets) == 3
    for design in space.presets.values():
        study = optuna.create_study()
        study.enqueue_trial(space.search.params_for(design))
        assert space.search.suggest(study.ask()) == design


def test_tanh_space_uses_regions():
    space = load_space("spaces/tanh_placements.py")
    assert space.depths == (15, 20, 25, 50)
    assert space.presets == dict(PRESETS)
    assert type(space.search).__name__ == "RegionSearch"


def test_relu_space_uses_relu_presets():
    space = load_space("spaces/relu_placements.py")
    assert space.presets == relu_presets()
    assert space.presets["exp1"] == "linear bn + relu | linear bn + relu"
    assert space.activation == "relu"


def test_heterogeneous_constraint_rejects_linear_region():
    space = load_space("spaces/heterogeneous.py")
    linear = parse_design("1/2: linear bn + id | linear bn + id; exp1")
    assert "linear map" in space.constraint(linear)
    assert space.constraint(parse_design("1/2: exp1; control")) is None


def test_auto_sampler_brute_force_for_small_space():
    space = load_space("spaces/relu_placements.py")
    sampler, reason = choose_sampler("auto", space.search, 64, seed=0)
    assert isinstance(sampler, optuna.samplers.BruteForceSampler)
    assert reason == "brute force: the space has 64 designs, no more than the 64 trials"


def test_auto_sampler_tpe_for_large_space():
    space = load_space("spaces/tanh_placements.py")
    sampler, reason = choose_sampler("auto", space.search, 20, seed=0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert "unknown number of designs" in reason


def test_sampler_rejects_unknown_name():
    with pytest.raises(SpaceError, match="unknown sampler 'cmaes'"):
        choose_sampler("cmaes", None, 10, seed=0)


def test_pruners_by_name():
    assert isinstance(
        make_pruner("median", warmup=2, epochs=10), optuna.pruners.MedianPruner
    )
    assert isinstance(
        make_pruner("hyperband", warmup=2, epochs=10), optuna.pruners.HyperbandPruner
    )
    assert isinstance(
        make_pruner("none", warmup=2, epochs=10), optuna.pruners.NopPruner
    )
    with pytest.raises(SpaceError, match="unknown pruner 'asha'"):
        make_pruner("asha", warmup=2, epochs=10)
