"""Exact path statistics against brute-force enumeration of every path."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocksearch.analysis import analyse, enumerate_paths
from blocksearch.cli import main
from blocksearch.dsl import Block, Op, Stage
from blocksearch.presets import PRESETS

DESIGNS = [
    *PRESETS.values(),
    "linear bn + id",
    "id + id",
    "linear bn tanh + tanh -> tanh",
    "linear relu linear + scale(0.5) -> relu",
    "linear bn + tanh | linear bn + id -> tanh | linear + relu relu",
    "1/2: exp1; control",
    "1: linear + tanh; exp2",
]


def _check_against_enumeration(design, depth: int) -> None:
    paths = enumerate_paths(design, depth)
    stats = analyse(design, depth)
    activations = Counter(a for a, _ in paths)
    weights = Counter(w for _, w in paths)

    assert stats.paths == len(paths)
    assert dict(enumerate(stats.activations.paths)) == {
        k: activations.get(k, 0) for k in range(len(stats.activations.paths))
    }
    assert sum(stats.weight_layers.paths) == len(paths)
    for k, count in weights.items():
        assert stats.weight_layers.paths[k] == count
    assert stats.activations.min == min(activations)
    assert stats.activations.max == max(activations)
    assert stats.activations.mean == pytest.approx(
        sum(a for a, _ in paths) / len(paths)
    )
    assert stats.weight_layers.mean == pytest.approx(
        sum(w for _, w in paths) / len(paths)
    )
    assert stats.activation_free_paths == activations.get(0, 0)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_stats_match_enumeration(design, depth):
    _check_against_enumeration(design, depth)


_ops = st.sampled_from(["linear", "bn", "tanh", "relu", "gelu", "ln"]).map(Op)
_path = st.lists(_ops, max_size=3).map(tuple)
_stage = st.builds(Stage, main=_path, skip=_path, post=_path)
_block = st.lists(_stage, min_size=1, max_size=3).map(lambda s: Block(tuple(s)))


@settings(max_examples=60, deadline=None)
@given(_block, st.integers(1, 3))
def test_stats_match_enumeration_random(block, depth):
    _check_against_enumeration(block, depth)


@pytest.mark.parametrize(
    ("preset", "activations", "weights"),
    [
        ("control", (40, 40.0, 40), (0, 20.0, 40)),
        ("exp1", (0, 20.0, 40), (0, 20.0, 40)),
        ("exp2", (20, 30.0, 40), (0, 20.0, 40)),
    ],
)
def test_presets_at_depth_20(preset, activations, weights):
    stats = analyse(PRESETS[preset], 20)
    assert stats.paths == 2**40
    assert (stats.activations.min, stats.activations.mean, stats.activations.max) == (
        activations
    )
    assert (
        stats.weight_layers.min,
        stats.weight_layers.mean,
        stats.weight_layers.max,
    ) == weights
    assert stats.skip_chain_activations == 40


def test_exp1_has_one_activation_free_path():
    # Only the path through every main path avoids the skip-edge tanh.
    assert analyse(PRESETS["exp1"], 20).activation_free_paths == 1
    assert analyse(PRESETS["control"], 20).activation_free_paths == 0


def test_exp1_activation_distribution_is_binomial():
    from math import comb

    stats = analyse(PRESETS["exp1"], 50)
    assert stats.activations.paths == tuple(comb(100, k) for k in range(101))


def test_depth_500_is_exact():
    stats = analyse(PRESETS["exp2"], 500)
    assert stats.paths == 2**1000
    assert stats.activations.mean == 750.0
    assert stats.skip_chain_activations == 1000


def test_regions_change_skip_chain():
    # Skip-edge tanh in the first half only: the 10 exp1 blocks put 20 tanh on
    # the skip chain and the linear second half adds none.
    stats = analyse("1/2: exp1; linear bn + id | linear bn + id", 20)
    assert stats.skip_chain_activations == 20


def test_analyse_rejects_bad_depth():
    with pytest.raises(ValueError, match="depth must be a positive integer, got 0"):
        analyse(PRESETS["exp1"], 0)


def test_compile_json_keys(capsys):
    assert main(["compile", PRESETS["exp2"], "--depth", "20", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["canonical"] == PRESETS["exp2"]
    assert len(record["hash"]) == 12
    assert record["paths"] == 2**40
    assert record["activations"] == {"min": 20, "mean": 30.0, "max": 40}
    assert record["weight_layers"] == {"min": 0, "mean": 20.0, "max": 40}
    assert record["skip_chain_activations"] == 40
    assert record["activation_free_paths"] == 0


def test_compile_prints_path_statistics(capsys):
    assert main(["compile", "exp1", "--depth", "20", "--width", "8"]) == 0
    out = capsys.readouterr().out
    assert "hash: " in out
    assert "paths through the blocks: 1,099,511,627,776 (2^40)" in out
    assert "activations per path: min 0, mean 20, max 40" in out
    assert "paths without activations: 1 " in out


def test_compile_regions_need_depth(capsys):
    assert main(["compile", "1/3: exp1; control"]) == 3
    assert "pass --depth N" in capsys.readouterr().err


def test_compile_mermaid_flowchart(capsys):
    assert main(["compile", PRESETS["exp2"], "--mermaid"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "flowchart TB"
    assert 'b1_s1_add(("+"))' in out
    assert "b1_in -->|skip: id| b1_s1_add" in out
    assert "b1_s2_skip1 --> b1_s2_add" in out
    assert "b1_s1_post1 --> b1_s1_h" in out
    assert out.count("subgraph") == 2
