"""A heterogeneous residual network: activation type and placement per region.

Each of two depth regions chooses its own activation (tanh or ReLU) and its own
placement per stage, and the boundary between them. The question: do early
blocks, close to the input, want a different nonlinearity than late blocks?
The search is written here as a small class to show that a space file may
define its own. It needs suggest(trial) and params_for(design).
"""

from fractions import Fraction

import optuna

from blocksearch import OpKind, PlacementSearch, Space, SpaceError, TrainConfig
from blocksearch.dsl import Design, Region, format_design, normalize, parse_design
from blocksearch.ops import get_op
from blocksearch.presets import PRESETS

ACTIVATIONS = ("tanh", "relu")
BOUNDARIES = ("1/4", "1/3", "1/2", "2/3", "3/4")
SEARCHES = {name: PlacementSearch(activation=name) for name in ACTIVATIONS}


def _has_activation(design: Design) -> str | None:
    """Reject a region without activations: its blocks form one linear map."""
    for region in design.regions:
        ops = [op for s in region.block.stages for op in s.main + s.skip + s.post]
        if not any(get_op(op.name).kind is OpKind.ACTIVATION for op in ops):
            return "a region without any activation is a linear map"
    return None


class TwoRegionSearch:
    """Two regions; every trial samples the same five parameters."""

    def suggest(self, trial: optuna.Trial) -> str:
        boundary = trial.suggest_categorical("boundary", BOUNDARIES)
        regions = []
        for region in ("early", "late"):
            activation = trial.suggest_categorical(f"{region}_activation", ACTIVATIONS)
            search = SEARCHES[activation]
            placements = [
                trial.suggest_categorical(f"{region}_stage{s}", search.choices)
                for s in (1, 2)
            ]
            regions.append(search.block(placements))
        early, late = regions
        design = Design((Region(early, Fraction(boundary)), Region(late)))
        return format_design(normalize(design))

    def params_for(self, design: str) -> dict[str, str]:
        parsed = normalize(parse_design(design))
        if parsed.block is None:
            raise SpaceError(f"preset {design!r} must be a single block")
        for activation, search in SEARCHES.items():
            try:
                placements = search.params_for(design)
            except SpaceError:
                continue
            params = {"boundary": "1/2"}
            for region in ("early", "late"):
                params[f"{region}_activation"] = activation
                for name, value in placements.items():
                    params[f"{region}_{name}"] = value
            return params
        raise SpaceError(f"preset {design!r} uses none of {ACTIVATIONS}")


SPACE = Space(
    name="heterogeneous",
    depths=(20, 50),  # a depth where tanh placement mattered, and a deep one
    search=TwoRegionSearch(),
    presets=PRESETS,  # the tanh presets as reference points
    activation="tanh",
    width=256,
    dataset="cifar10",
    train=TrainConfig(epochs=30, seed=42),  # 30 epochs: past the epoch-20 gap
    trials=40,  # a small sample of the 5 x (2 x 8 x 8) ** 2 = 81,920 designs
    sampler="tpe",
    pruner="hyperband",  # many weak designs: stop them at growing budgets
    warmup_epochs=3,
    constraint=_has_activation,
)
