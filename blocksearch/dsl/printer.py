"""Canonical text of blocks and designs, and the hash that identifies a design."""

from __future__ import annotations

import hashlib
from fractions import Fraction

from blocksearch import ops
from blocksearch.dsl.records import Block, Design, Op, Region, Share

__all__ = ["design_hash", "format_block", "format_design", "format_op", "normalize"]


def _format_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def format_op(op: Op) -> str:
    definition = ops.get_op(op.name)
    args = list(op.args)
    # Trailing arguments equal to their default are left out.
    while args and not definition.params[len(args) - 1].required:
        if args[-1] != definition.params[len(args) - 1].default:
            break
        args.pop()
    if not args:
        return op.name
    return f"{op.name}({', '.join(_format_number(a) for a in args)})"


def _format_path(path: tuple[Op, ...]) -> str:
    return " ".join(format_op(op) for op in path) if path else "id"


def format_block(block: Block) -> str:
    """Return the canonical text of a block.

    ``parse_block(format_block(b)) == b`` holds for every block ``b`` built
    from registered ops.
    """
    stages = []
    for stage in block.stages:
        text = f"{_format_path(stage.main)} + {_format_path(stage.skip)}"
        if stage.post:
            text += f" -> {_format_path(stage.post)}"
        stages.append(text)
    return " | ".join(stages)


def _format_share(share: Share) -> str:
    if isinstance(share, Fraction):
        # Always with a slash, so that 1/1 (the whole depth) is not read back
        # as a count of one block.
        return f"{share.numerator}/{share.denominator}"
    return str(share)


def format_design(design: Design) -> str:
    """Return the text of a design, region by region.

    ``parse_design(format_design(d)) == d`` holds for every design. Call
    :func:`normalize` first for the canonical text.
    """
    parts = []
    for region in design.regions:
        text = format_block(region.block)
        if region.share is not None:
            text = f"{_format_share(region.share)}: {text}"
        parts.append(text)
    return "; ".join(parts)


def _merge(regions: list[Region]) -> list[Region]:
    merged: list[Region] = []
    for region in regions:
        # A last region that takes "the rest" absorbs every region of the
        # same block just before it, whatever kind of share those have.
        if region.share is None:
            while merged and merged[-1].block == region.block:
                merged.pop()
            merged.append(region)
            continue
        if merged and merged[-1].block == region.block:
            previous = merged[-1].share
            if type(previous) is type(region.share):
                merged[-1] = Region(region.block, previous + region.share)
                continue
        merged.append(region)
    return merged


def normalize(design: Design) -> Design:
    """Return the canonical record of a design: equal for equivalent spellings.

    Regions of size zero go, adjacent regions of one block merge, and a last
    region whose fraction completes the depth takes "the rest" instead.
    """
    regions = [r for r in design.regions if r.share != 0]
    if not regions:
        return design
    regions = _merge(regions)
    shares = [r.share for r in regions]
    only_fractions = all(isinstance(s, Fraction) for s in shares)
    if only_fractions and sum(shares, Fraction(0)) == 1:
        regions[-1] = Region(regions[-1].block, None)
        regions = _merge(regions)
    return Design(tuple(regions))


def design_hash(design: Design | Block) -> str:
    """Return a 12-hex-digit hash of the canonical text of ``design``.

    The hash is a prefix of the SHA-256 of the canonical text, so it stays the
    same across processes and releases for as long as the text does.
    """
    if isinstance(design, Block):
        design = Design.uniform(design)
    text = format_design(normalize(design))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
