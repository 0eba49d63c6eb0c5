"""Typed records of parsed descriptions: ops, stages, blocks and network designs."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from blocksearch.errors import DslError

__all__ = ["Block", "Design", "Op", "Region", "Share", "Stage"]

#: Size of a region: a number of blocks, a fraction of the depth, or None for
#: the blocks left over after the regions before it.
Share = int | Fraction | None


@dataclass(frozen=True)
class Op:
    """One op of a path, with its arguments in the order of its parameters.

    Arguments left out in the text are stored with their default value, so two
    spellings of the same op compare equal.
    """

    name: str
    args: tuple[float | int, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One residual stage: ``post(main(x) + skip(x))``.

    An empty ``main`` or ``skip`` is the identity, an empty ``post`` applies
    nothing after the add.
    """

    main: tuple[Op, ...]
    skip: tuple[Op, ...] = ()
    post: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Block:
    """A residual block: stages applied one after another."""

    stages: tuple[Stage, ...]

    def __str__(self) -> str:
        from blocksearch.dsl.printer import format_block

        return format_block(self)


@dataclass(frozen=True)
class Region:
    """A run of consecutive blocks of one design inside a network."""

    block: Block
    share: Share = None


def _round_half_up(value: Fraction) -> int:
    return int((value + Fraction(1, 2)).__floor__())


@dataclass(frozen=True)
class Design:
    """A network design: regions of blocks from the input side to the output.

    Only the last region may have no share, and it takes the blocks left
    over. A region ends at block ``round(C + F * depth)``, with halves rounded
    up. C is the sum of the block counts and F the sum of the fractions of this
    region and the regions before it.
    """

    regions: tuple[Region, ...]

    def __post_init__(self) -> None:
        if not self.regions:
            raise DslError("a design needs at least one region")
        for region in self.regions[:-1]:
            if region.share is None:
                raise DslError(
                    "only the last region may leave out its share; give the "
                    "others a block count or a fraction, e.g. '1/3: exp1; control'"
                )
        for region in self.regions:
            share = region.share
            if share is not None and (share < 0 or isinstance(share, bool)):
                raise DslError(f"region share must not be negative, got {share}")

    @classmethod
    def uniform(cls, block: Block) -> Design:
        """Return the design that uses ``block`` at every depth."""
        return cls((Region(block),))

    @property
    def block(self) -> Block | None:
        """The block of a single-region design that spans the whole depth, or None."""
        if len(self.regions) == 1 and self.regions[0].share is None:
            return self.regions[0].block
        return None

    def runs(self, depth: int) -> list[tuple[int, Block]]:
        """Return ``(count, block)`` runs of this design at ``depth``, in order.

        Raises:
            DslError: If the regions need more than ``depth`` blocks or, when
                the last region has a share, cover fewer than ``depth``.
        """
        counts = 0
        fractions = Fraction(0)
        position = 0
        runs = []
        for region in self.regions:
            if region.share is None:
                end = depth
            else:
                if isinstance(region.share, Fraction):
                    fractions += region.share
                else:
                    counts += region.share
                end = counts + _round_half_up(fractions * depth)
            if end > depth:
                raise DslError(
                    f"the regions need {end} blocks but the depth is {depth}; "
                    "shrink the shares or use fractions of the depth"
                )
            runs.append((end - position, region.block))
            position = end
        if position != depth:
            raise DslError(
                f"the regions cover {position} of {depth} blocks; leave out the "
                "last region's share so that it takes the rest"
            )
        return [(count, block) for count, block in runs if count > 0]

    def blocks(self, depth: int) -> list[Block]:
        """Return the block design of every position, input side first."""
        return [block for count, block in self.runs(depth) for _ in range(count)]

    def at_depth(self, depth: int) -> Design:
        """Return this design at ``depth`` with every share a block count.

        Adjacent runs of the same block merge, so designs that build the same
        network at ``depth`` return equal records.
        """
        merged: list[list] = []
        for count, block in self.runs(depth):
            if merged and merged[-1][1] == block:
                merged[-1][0] += count
            else:
                merged.append([count, block])
        regions = [Region(block, count) for count, block in merged]
        regions[-1] = Region(regions[-1].block, None)
        return Design(tuple(regions))

    def __str__(self) -> str:
        from blocksearch.dsl.printer import format_design

        return format_design(self)
