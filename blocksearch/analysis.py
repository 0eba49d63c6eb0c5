"""Exact statistics of the gradient paths through a residual design.

Unrolled, a residual stage ``post(main(x) + skip(x))`` offers every path two
edges, the main path and the skip edge, and both continue through the ops
after the add. A network of ``depth`` blocks of ``s`` stages therefore has
``2 ** (s * depth)`` input-to-output paths through its blocks. Along each path
this module counts the activation ops (each contributes one activation
derivative to the gradient) and the weight ops (linear layers). Ops are
classified by their :class:`~blocksearch.ops.OpKind`, so plug-in ops take part.

The counts are exact, not sampled: the distribution over paths is the product,
stage by stage, of two-term polynomials, computed with Python integers in
``O(depth * s * max_count)`` operations. The stem and the head are left out,
because every path crosses them alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from blocksearch import ops
from blocksearch.dsl import Block, Design, Op, Stage, parse_design
from blocksearch.errors import DslError

__all__ = ["MAX_STAGES", "Distribution", "PathStats", "analyse", "enumerate_paths"]

#: Largest number of stages analysed, e.g. depth 5,000 of two-stage blocks. An
#: estimate of what stays within seconds, measured at depth 500 (0.3 s).
MAX_STAGES = 10_000


@dataclass(frozen=True)
class Distribution:
    """Number of paths per count: ``paths[k]`` paths cross exactly ``k`` ops."""

    paths: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.paths)

    @property
    def min(self) -> int:
        return next(k for k, n in enumerate(self.paths) if n)

    @property
    def max(self) -> int:
        return max(k for k, n in enumerate(self.paths) if n)

    @property
    def mean(self) -> float:
        weighted = sum(k * n for k, n in enumerate(self.paths))
        return float(Fraction(weighted, self.total))

    def summary(self) -> dict[str, float | int]:
        return {"min": self.min, "mean": self.mean, "max": self.max}


@dataclass(frozen=True)
class PathStats:
    """Path statistics of a design at one depth."""

    depth: int
    paths: int
    activations: Distribution
    weight_layers: Distribution
    skip_chain_activations: int  # on the path that takes every skip edge
    activation_free_paths: int

    @property
    def log2_paths(self) -> float:
        return math.log2(self.paths)

    def to_dict(self) -> dict[str, object]:
        """Return the statistics as JSON-ready values (``paths`` as an integer)."""
        return {
            "depth": self.depth,
            "paths": self.paths,
            "log2_paths": self.log2_paths,
            "activations": self.activations.summary(),
            "weight_layers": self.weight_layers.summary(),
            "skip_chain_activations": self.skip_chain_activations,
            "activation_free_paths": self.activation_free_paths,
            "activation_free_fraction": self.activation_free_paths / self.paths,
        }


def _count(path: tuple[Op, ...], kind: ops.OpKind) -> int:
    return sum(ops.get_op(op.name).kind is kind for op in path)


def _edges(stage: Stage, kind: ops.OpKind) -> tuple[int, int]:
    """Return the count of ``kind`` ops on the main and on the skip route."""
    post = _count(stage.post, kind)
    return _count(stage.main, kind) + post, _count(stage.skip, kind) + post


def _stages(design: Design | Block | str, depth: int) -> list[Stage]:
    if isinstance(design, str):
        design = parse_design(design)
    runs = [(depth, design)] if isinstance(design, Block) else design.runs(depth)
    count = sum(n * len(block.stages) for n, block in runs)
    if count > MAX_STAGES:
        # The distributions hold O(stages) integers of O(stages) bits, updated
        # once per stage, so time grows with the cube of the stage count.
        raise DslError(
            f"exact path statistics are limited to {MAX_STAGES:,} stages; this "
            f"design has {count:,} at depth {depth}. Choose a smaller depth"
        )
    return [stage for n, block in runs for _ in range(n) for stage in block.stages]


def _distribution(stages: Sequence[Stage], kind: ops.OpKind) -> Distribution:
    # paths[k] is the number of partial paths that crossed k ops so far
    paths = [1]
    for stage in stages:
        main, skip = _edges(stage, kind)
        grown = [0] * (len(paths) + max(main, skip))
        for k, count in enumerate(paths):
            if count:
                grown[k + main] += count
                grown[k + skip] += count
        paths = grown
    while len(paths) > 1 and paths[-1] == 0:
        paths.pop()
    return Distribution(tuple(paths))


def analyse(design: Design | Block | str, depth: int) -> PathStats:
    """Return the exact path statistics of ``design`` built at ``depth`` blocks.

    Raises:
        DslError: If ``design`` is text that does not parse, its regions do
            not fit ``depth``, or it has more than ``MAX_STAGES`` stages.
        ValueError: If ``depth`` is not a positive integer.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    stages = _stages(design, depth)
    activations = _distribution(stages, ops.OpKind.ACTIVATION)
    skip_chain = sum(_edges(stage, ops.OpKind.ACTIVATION)[1] for stage in stages)
    return PathStats(
        depth=depth,
        paths=2 ** len(stages),
        activations=activations,
        weight_layers=_distribution(stages, ops.OpKind.WEIGHT),
        skip_chain_activations=skip_chain,
        activation_free_paths=activations.paths[0],
    )


def enumerate_paths(design: Design | Block | str, depth: int) -> list[tuple[int, int]]:
    """List ``(activations, weight_layers)`` of every path, one by one.

    Exponential in the number of stages: a reference for tests at small depth.
    """
    stages = _stages(design, depth)
    paths = [(0, 0)]
    for stage in stages:
        act_main, act_skip = _edges(stage, ops.OpKind.ACTIVATION)
        weight_main, weight_skip = _edges(stage, ops.OpKind.WEIGHT)
        paths = [
            (a + da, w + dw)
            for a, w in paths
            for da, dw in ((act_main, weight_main), (act_skip, weight_skip))
        ]
    return paths
