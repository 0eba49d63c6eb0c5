"""Search over where one activation sits in each stage of a block.

Every stage has a fixed main path (``linear bn`` by default). A placement
names the positions that carry the activation:

- ``main``: at the end of the main path, ``linear bn act + id``;
- ``skip``: on the skip edge, ``linear bn + act``;
- ``post``: after the add, ``linear bn + id -> act``;

joined with ``+`` for combinations (``skip+post``), or ``none`` for a purely
linear stage. Placements are stored as these strings, one Optuna parameter
per stage named ``stage1``, ``stage2``, and so on.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from blocksearch import ops
from blocksearch.dsl import Block, Op, Stage, format_block, parse_block
from blocksearch.errors import SpaceError

__all__ = ["PLACEMENTS", "PlacementSearch"]

POSITIONS = ("main", "skip", "post")

#: Every subset of positions, the reference variants' placements first.
PLACEMENTS = (
    "post",
    "skip",
    "main",
    "main+skip",
    "main+post",
    "skip+post",
    "main+skip+post",
    "none",
)


class PlacementSearch:
    """Sample one activation placement per stage and write it as a description.

    Args:
        activation: Registered op placed at the chosen positions.
        stages: Number of stages per block.
        main: Op names of every stage's main path, before any activation.
        choices: Placements the sampler chooses from; each is ``none`` or
            positions from ``main``, ``skip``, ``post`` joined with ``+``.
    """

    def __init__(
        self,
        *,
        activation: str = "tanh",
        stages: int = 2,
        main: Sequence[str] = ("linear", "bn"),
        choices: Sequence[str] = PLACEMENTS,
    ) -> None:
        if not ops.is_registered(activation):
            raise SpaceError(
                f"activation {activation!r} is not a registered op; "
                f"registered ops: {', '.join(ops.op_names())}"
            )
        if stages < 1:
            raise SpaceError(f"stages must be a positive integer, got {stages!r}")
        for choice in choices:
            _positions(choice)
        self.activation = activation
        self.stages = stages
        self.main = tuple(Op(name) for name in main)
        self.choices = tuple(choices)

    def block(self, placements: Sequence[str]) -> Block:
        """Return the block with the activation at ``placements``, one per stage."""
        if len(placements) != self.stages:
            raise SpaceError(
                f"got {len(placements)} placements for {self.stages} stages"
            )
        act = (Op(self.activation),)
        stages = []
        for placement in placements:
            where = _positions(placement)
            stages.append(
                Stage(
                    main=self.main + (act if "main" in where else ()),
                    skip=act if "skip" in where else (),
                    post=act if "post" in where else (),
                )
            )
        return Block(tuple(stages))

    def suggest(self, trial: optuna.Trial) -> str:
        """Sample one placement per stage and return the block's description."""
        placements = [
            trial.suggest_categorical(f"stage{i}", self.choices)
            for i in range(1, self.stages + 1)
        ]
        return format_block(self.block(placements))

    def params_for(self, design: str) -> dict[str, str]:
        """Return the trial parameters that make :meth:`suggest` produce ``design``.

        Raises:
            SpaceError: If ``design`` is not a placement of this search's
                activation on its main path.
        """
        block = parse_block(design)
        if len(block.stages) == self.stages:
            params = {}
            for i, stage in enumerate(block.stages, start=1):
                params[f"stage{i}"] = self._placement_of(stage)
            if self.block(list(params.values())) == block:
                if all(p in self.choices for p in params.values()):
                    return params
        raise SpaceError(
            f"design {design!r} is not in this placement search: it must have "
            f"{self.stages} stages of main path "
            f"{format_block(Block((Stage(self.main),))).split(' +')[0]!r} with "
            f"{self.activation!r} placed at one of {', '.join(self.choices)}"
        )

    def _placement_of(self, stage: Stage) -> str:
        act = Op(self.activation)
        where = []
        if stage.main[len(self.main) :] == (act,):
            where.append("main")
        if stage.skip == (act,):
            where.append("skip")
        if stage.post == (act,):
            where.append("post")
        return "+".join(where) or "none"


def _positions(placement: str) -> frozenset[str]:
    if placement == "none":
        return frozenset()
    parts = placement.split("+")
    if (
        not parts
        or any(p not in POSITIONS for p in parts)
        or len(set(parts)) < len(parts)
    ):
        raise SpaceError(
            f"invalid placement {placement!r}: use 'none' or positions from "
            f"{', '.join(POSITIONS)} joined with '+', e.g. 'skip+post'"
        )
    return frozenset(parts)
