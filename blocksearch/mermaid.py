"""Mermaid flowcharts of block designs, for Markdown viewers that render them."""

from __future__ import annotations

from blocksearch.dsl import Block, Design, Op, format_block
from blocksearch.dsl.printer import format_op

__all__ = ["design_flowchart"]


def _chain(prefix: str, path: tuple[Op, ...]) -> tuple[list[str], list[str]]:
    """Return node lines and node ids of ``path``, one node per op."""
    nodes, ids = [], []
    for index, op in enumerate(path, start=1):
        node = f"{prefix}{index}"
        nodes.append(f'    {node}["{format_op(op)}"]')
        ids.append(node)
    return nodes, ids


def _link(
    lines: list[str], source: str, ids: list[str], target: str, label: str
) -> None:
    """Connect ``source`` through ``ids`` to ``target``; an empty chain is an edge."""
    if not ids:
        lines.append(f"  {source} -->|{label}| {target}")
        return
    lines.append(f"  {source} --> {ids[0]}")
    for before, after in zip(ids, ids[1:], strict=False):
        lines.append(f"  {before} --> {after}")
    lines.append(f"  {ids[-1]} --> {target}")


def _block_lines(block: Block, name: str, lines: list[str]) -> None:
    stages = len(block.stages)
    lines.append(f'  {name}_in(["{name}: x"])')
    source = f"{name}_in"
    for number, stage in enumerate(block.stages, start=1):
        prefix = f"{name}_s{number}"
        output = f"{name}_out" if number == stages else f"{prefix}_h"
        label = "y" if number == stages else f"h{number}"
        main_nodes, main_ids = _chain(f"{prefix}_main", stage.main)
        skip_nodes, skip_ids = _chain(f"{prefix}_skip", stage.skip)
        post_nodes, post_ids = _chain(f"{prefix}_post", stage.post)

        lines.append(f'  subgraph {prefix}["stage {number}"]')
        lines.extend(main_nodes + skip_nodes)
        lines.append(f'    {prefix}_add(("+"))')
        lines.extend(post_nodes)
        lines.append("  end")
        lines.append(f'  {output}(["{label}"])')

        _link(lines, source, main_ids, f"{prefix}_add", "main: id")
        _link(lines, source, skip_ids, f"{prefix}_add", "skip: id")
        if post_ids:
            _link(lines, f"{prefix}_add", post_ids, output, "")
        else:
            lines.append(f"  {prefix}_add --> {output}")
        source = output


def design_flowchart(design: Design | Block) -> str:
    """Return a Mermaid flowchart of each distinct block of ``design``.

    Every stage is a subgraph: the main path and the skip edge meet at a
    ``+`` node, and the ops after the add follow it.
    """
    blocks: list[Block] = []
    if isinstance(design, Block):
        blocks.append(design)
    else:
        for region in design.regions:
            if region.block not in blocks:
                blocks.append(region.block)
    lines = ["flowchart TB"]
    for number, block in enumerate(blocks, start=1):
        lines.append(f"  %% block {number}: {format_block(block)}")
        _block_lines(block, f"b{number}", lines)
    return "\n".join(lines)
