"""Text descriptions of residual blocks and of whole networks.

A block is one or more stages separated by ``|``. Each stage names the ops of
its main path, then ``+`` and the ops of its skip edge, then optionally ``->``
and the ops applied after the add::

    linear bn + id -> tanh | linear bn + tanh

computes ``h = tanh(bn(linear(x)) + x)`` and then ``y = bn(linear(h)) + tanh(h)``.
Ops are looked up in :mod:`blocksearch.ops`; an op with parameters takes them in
parentheses, by position or by name: ``dropout(0.1)``, ``leaky_relu(slope=0.2)``.
``id`` is the identity: a path made only of ``id`` computes nothing, and ``id``
next to other ops is dropped. Whitespace, line breaks and ``#`` comments are
ignored. A preset name such as ``exp1`` stands for that preset's block.

A design describes a whole network as regions separated by ``;``, from the
input side on, each with a share of the depth: a block count or a fraction.
The last region may leave out its share and takes the rest::

    1/3: exp1; control        # first third exp1, the rest control
    5: linear bn + tanh; exp2 # five blocks, then exp2 blocks

Grammar::

    design := region (";" region)*
    region := [share ":"] block
    share  := INTEGER | INTEGER "/" INTEGER | DECIMAL | "rest"
    block  := PRESET | stage ("|" stage)*
    stage  := path "+" path ["->" path]
    path   := op op*
    op     := NAME ["(" [arg ("," arg)*] ")"]
    arg    := [NAME "="] NUMBER
"""

from __future__ import annotations

from blocksearch.dsl.parser import (
    check_text,
    parse_block,
    parse_design,
    split_designs,
)
from blocksearch.dsl.printer import (
    design_hash,
    format_block,
    format_design,
    format_op,
    normalize,
)
from blocksearch.dsl.records import Block, Design, Op, Region, Stage

__all__ = [
    "Block",
    "Design",
    "Op",
    "Region",
    "Stage",
    "canonical",
    "canonical_at",
    "check_text",
    "design_hash",
    "format_block",
    "format_op",
    "format_design",
    "normalize",
    "parse_block",
    "parse_design",
    "split_designs",
]


def canonical(text: str) -> str:
    """Return the canonical text of a design: equal for equivalent spellings."""
    return format_design(normalize(parse_design(text)))


def canonical_at(text: str, depth: int) -> str:
    """Return the canonical text of a design built at ``depth``, shares as counts."""
    return format_design(parse_design(text).at_depth(depth))
