"""Compile block descriptions into PyTorch modules.

:func:`build_block` turns one :class:`~blocksearch.dsl.Block` into a
:class:`ResidualBlock`; :class:`ResidualMLP` stacks blocks between a stem and a
classification head, the network of the reference experiment::

    Linear(in_features, width) -> BatchNorm1d -> act      (stem)
    block 1 ... block depth                               (width to width)
    Linear(width, num_classes)                            (head)
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from blocksearch import ops
from blocksearch.dsl import (
    Block,
    Design,
    Op,
    Stage,
    format_block,
    parse_block,
    parse_design,
)
from blocksearch.errors import DslError

__all__ = [
    "ResidualBlock",
    "ResidualMLP",
    "ResidualStage",
    "build_block",
    "count_parameters",
]


def _build_path(path: tuple[Op, ...], width: int) -> nn.Sequential:
    return nn.Sequential(*(ops.get_op(op.name).build(width, op.args) for op in path))


class ResidualStage(nn.Module):
    """One stage of a residual block: ``y = post(main(x) + skip(x))``.

    An empty path is the identity. Input and output are ``(batch, width)``.

    Args:
        stage: Parsed description of the stage.
        width: Number of features, kept by every op.
    """

    def __init__(self, stage: Stage, width: int) -> None:
        super().__init__()
        self.main = _build_path(stage.main, width)
        self.skip = _build_path(stage.skip, width)
        self.post = _build_path(stage.post, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.main(x) + self.skip(x))  # (batch, width)


class ResidualBlock(nn.Module):
    """A residual block compiled from a description; maps ``(batch, width)`` to
    ``(batch, width)``.

    ``print`` shows the canonical description, so blocks of the same design
    print alike and a stack of them collapses into one line with a count.

    Args:
        design: A parsed :class:`~blocksearch.dsl.Block` or its text.
        width: Number of features.
    """

    def __init__(self, design: Block | str, width: int) -> None:
        super().__init__()
        if isinstance(design, str):
            design = parse_block(design)
        self.design = design
        self.width = width
        self.stages = nn.Sequential(*(ResidualStage(s, width) for s in design.stages))

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(x)

    def extra_repr(self) -> str:
        return f"{format_block(self.design)!r}, width={self.width}"


def build_block(design: Block | str, width: int) -> ResidualBlock:
    """Compile a block description into a module of the given width."""
    return ResidualBlock(design, width)


class ResidualMLP(nn.Module):
    """Residual MLP classifier: stem, ``depth`` residual blocks, linear head.

    Args:
        design: A block used at every depth, a network design with regions
            (record or text), or a sequence of ``depth`` blocks.
        depth: Number of residual blocks.
        width: Features inside the network.
        in_features: Features of a flattened input, e.g. 3072 for CIFAR-10.
        num_classes: Number of output logits.
        activation: Name of the registered op applied at the end of the stem.

    Shapes: input ``(batch, in_features)``, output ``(batch, num_classes)``.
    """

    def __init__(
        self,
        design: Block | Design | str | Sequence[Block | str],
        *,
        depth: int,
        width: int = 256,
        in_features: int = 3072,
        num_classes: int = 10,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        for name, value in (
            ("depth", depth),
            ("width", width),
            ("in_features", in_features),
            ("num_classes", num_classes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        designs = _designs_per_block(design, depth)
        stem_activation = ops.get_op(activation)
        if stem_activation.params and any(p.required for p in stem_activation.params):
            raise DslError(
                f"stem activation {activation!r} needs arguments; "
                "use an activation without required arguments"
            )
        defaults = tuple(p.default for p in stem_activation.params)

        # stem: (batch, in_features) -> (batch, width)
        self.stem = nn.Sequential(
            nn.Linear(in_features, width),
            nn.BatchNorm1d(width),
            stem_activation.build(width, defaults),
        )
        # blocks: (batch, width) -> (batch, width); ModuleList prints repeats
        # of an identical block as one line with a count.
        self.blocks = nn.ModuleList(build_block(d, width) for d in designs)
        # head: (batch, width) -> (batch, num_classes)
        self.head = nn.Linear(width, num_classes)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def _designs_per_block(
    design: Block | Design | str | Sequence[Block | str], depth: int
) -> list[Block]:
    if isinstance(design, Block):
        return [design] * depth
    if isinstance(design, str):
        design = parse_design(design)
    if isinstance(design, Design):
        return design.blocks(depth)
    designs = [parse_block(d) if isinstance(d, str) else d for d in design]
    if len(designs) != depth:
        raise ValueError(
            f"got {len(designs)} block designs for depth {depth}; "
            "give one design, or exactly one per block"
        )
    return designs


def count_parameters(
    design: Block | Design | str | None,
    *,
    depth: int,
    width: int,
    in_features: int,
    num_classes: int = 10,
) -> int:
    """Return the parameter count of a network without building all of it.

    Each distinct block is built once at width 1 and at width 2, which fixes
    the quadratic per-block count ``a * width**2 + b * width``. A None design
    counts two linear and two BatchNorm layers per block, as the presets have.
    """
    if design is None:
        design = "linear bn + id | linear bn + id"
    if isinstance(design, str):
        design = parse_design(design)
    runs = [(depth, design)] if isinstance(design, Block) else design.runs(depth)
    total = in_features * width + width + 2 * width  # stem linear and norm
    total += width * num_classes + num_classes  # head
    for count, block in runs:
        one = sum(p.numel() for p in ResidualBlock(block, 1).parameters())
        two = sum(p.numel() for p in ResidualBlock(block, 2).parameters())
        quadratic = (two - 2 * one) // 2
        total += count * (quadratic * width**2 + (one - quadratic) * width)
    return total
