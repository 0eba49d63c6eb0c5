"""Search over where one activation sits in each stage, per depth region.

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
from fractions import Fraction

import optuna

from blocksearch import ops
from blocksearch.dsl import (
    Block,
    Design,
    Op,
    Region,
    Stage,
    format_block,
    format_design,
    format_op,
    normalize,
    parse_design,
)
from blocksearch.errors import SpaceError

__all__ = ["BOUNDARIES", "PLACEMENTS", "PlacementSearch", "RegionSearch"]

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
        if not isinstance(stages, int) or stages < 1:
            raise SpaceError(f"stages must be a positive integer, got {stages!r}")
        if isinstance(main, str) or not all(
            isinstance(name, str) and ops.is_registered(name) for name in _items(main)
        ):
            raise SpaceError(
                f"main must be a sequence of registered op names such as "
                f"('linear', 'bn'), got {main!r}"
            )
        for choice in choices:
            _positions(choice)
        self.activation = activation
        self.stages = stages
        self.main = tuple(Op(name) for name in main)
        self.choices = tuple(choices)

    def __repr__(self) -> str:
        return (
            f"PlacementSearch(activation={self.activation!r}, stages={self.stages}, "
            f"main={self.main_text!r}, choices={self.choices!r})"
        )

    @property
    def main_text(self) -> str:
        """Text of the main path before any activation, e.g. ``linear bn``."""
        return " ".join(format_op(op) for op in self.main)

    def size(self) -> int:
        """Return the number of distinct designs: choices to the power of stages."""
        return len(set(self.choices)) ** self.stages

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
        parsed = normalize(parse_design(design))
        block = parsed.block if parsed.block is not None else Block(())
        if len(block.stages) == self.stages:
            params = {}
            for i, stage in enumerate(block.stages, start=1):
                params[f"stage{i}"] = self._placement_of(stage)
            if self.block(list(params.values())) == block:
                if all(p in self.choices for p in params.values()):
                    return params
        raise SpaceError(
            f"design {design!r} is not in this placement search: it must be one "
            f"block, without depth regions, of {self.stages} stages of main path "
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


def _items(value: object) -> list[object]:
    try:
        return list(value)  # type: ignore[call-overload]
    except TypeError:
        return [None]


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


#: Region boundaries a :class:`RegionSearch` chooses from, as fractions of depth.
BOUNDARIES = ("1/4", "1/3", "1/2", "2/3", "3/4")


class RegionSearch:
    """Sample a design whose block placement changes between depth regions.

    A trial chooses the number of regions, the boundaries between them as
    fractions of the depth, and one placement per stage for each region. Every
    trial samples the same parameters, used or not, so that the parameter
    names stay fixed and multivariate TPE can model them jointly:

    - ``regions``: number of regions, 1 to ``max_regions``;
    - ``boundary1`` ... : fractions such as ``"1/3"``, sorted before use;
    - ``region1_stage1`` ... : a placement string, as in :class:`PlacementSearch`.

    Args:
        placements: Search that describes one block from its placements.
        max_regions: Maximum number of depth regions.
        boundaries: Fractions of the depth a boundary may sit at.
    """

    def __init__(
        self,
        placements: PlacementSearch,
        *,
        max_regions: int = 3,
        boundaries: Sequence[str] = BOUNDARIES,
    ) -> None:
        if max_regions < 1:
            raise SpaceError(f"max_regions must be at least 1, got {max_regions!r}")
        for boundary in boundaries:
            fraction = _fraction(boundary)
            if not 0 < fraction < 1:
                raise SpaceError(
                    f"boundary {boundary!r} must lie strictly between 0 and 1"
                )
        self.placements = placements
        self.max_regions = max_regions
        self.boundaries = tuple(boundaries)

    def __repr__(self) -> str:
        return (
            f"RegionSearch({self.placements!r}, max_regions={self.max_regions}, "
            f"boundaries={self.boundaries!r})"
        )

    def design(
        self, region_placements: Sequence[Sequence[str]], cuts: Sequence[str]
    ) -> Design:
        """Return the design with ``cuts`` between regions of those placements."""
        if len(cuts) != len(region_placements) - 1:
            raise SpaceError(
                f"got {len(cuts)} boundaries for {len(region_placements)} regions"
            )
        ends = sorted(_fraction(c) for c in cuts)
        regions = []
        start = Fraction(0)
        for end, placements in zip(ends, region_placements, strict=False):
            regions.append(Region(self.placements.block(placements), end - start))
            start = end
        regions.append(Region(self.placements.block(region_placements[-1])))
        return normalize(Design(tuple(regions)))

    def suggest(self, trial: optuna.Trial) -> str:
        """Sample every parameter and return the design of the used ones."""
        count = trial.suggest_int("regions", 1, self.max_regions)
        cuts = [
            trial.suggest_categorical(f"boundary{i}", self.boundaries)
            for i in range(1, self.max_regions)
        ]
        region_placements = [
            [
                trial.suggest_categorical(
                    f"region{r}_stage{s}", self.placements.choices
                )
                for s in range(1, self.placements.stages + 1)
            ]
            for r in range(1, self.max_regions + 1)
        ]
        design = self.design(region_placements[:count], cuts[: count - 1])
        return format_design(design)

    def params_for(self, design: str) -> dict[str, object]:
        """Return parameters that make :meth:`suggest` produce ``design``.

        Parameters a design leaves unused (boundaries and placements of regions
        it lacks) are left to the sampler.

        Raises:
            SpaceError: If ``design`` is not one this search samples: more
                regions than ``max_regions``, a region end that is no sum of
                the allowed boundaries, or a block that is not a placement.
        """
        parsed = normalize(parse_design(design))
        regions = parsed.regions
        allowed = {_fraction(b): b for b in self.boundaries}
        params: dict[str, object] = {"regions": len(regions)}
        end = Fraction(0)
        for i, region in enumerate(regions, start=1):
            if i < len(regions):
                if not isinstance(region.share, Fraction):
                    break  # a block count: not a fraction of the depth
                end += region.share
                if end not in allowed:
                    break
                params[f"boundary{i}"] = allowed[end]
            try:
                block = self.placements.params_for(format_block(region.block))
            except SpaceError:
                break
            for name, value in block.items():
                params[f"region{i}_{name}"] = value
        else:
            if len(regions) <= self.max_regions:
                return params
        placements = self.placements
        raise SpaceError(
            f"design {design!r} is not in this region search: it may have at "
            f"most {self.max_regions} regions, each but the last a fraction of "
            f"the depth ending at one of {', '.join(self.boundaries)}, and each "
            f"region's block must have {placements.stages} stages of main path "
            f"{placements.main_text!r} with {placements.activation!r} placed at "
            f"one of {', '.join(placements.choices)}"
        )


def _fraction(text: str) -> Fraction:
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise SpaceError(
            f"boundary {text!r} is not a fraction; write it like '1/3'"
        ) from None
