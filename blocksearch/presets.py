"""Block designs from the reference experiment, written once as descriptions.

All three put one tanh per stage and differ only in where it sits:

- ``control``: the standard block, tanh after the add in both stages.
- ``exp1``: tanh on the skip edge in both stages, so the add is linear.
- ``exp2``: tanh after the add in the first stage, on the skip edge in the
  second.
"""

from __future__ import annotations

from types import MappingProxyType

from blocksearch.dsl import Block, Op, Stage, format_block, parse_block

__all__ = ["PRESETS", "preset_block", "relu_presets", "with_activation"]

PRESETS = MappingProxyType(
    {
        "control": "linear bn + id -> tanh | linear bn + id -> tanh",
        "exp1": "linear bn + tanh | linear bn + tanh",
        "exp2": "linear bn + id -> tanh | linear bn + tanh",
    }
)


def preset_block(name: str) -> Block:
    """Return the parsed design of preset ``name``.

    Raises:
        KeyError: If ``name`` is not a preset; the message lists the presets.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return parse_block(PRESETS[name])


def with_activation(block: Block, old: str, new: str) -> Block:
    """Return ``block`` with every op named ``old`` replaced by op ``new``."""

    def swap(path: tuple[Op, ...]) -> tuple[Op, ...]:
        return tuple(Op(new) if op.name == old else op for op in path)

    stages = tuple(
        Stage(main=swap(s.main), skip=swap(s.skip), post=swap(s.post))
        for s in block.stages
    )
    return Block(stages)


def relu_presets() -> dict[str, str]:
    """Return the three presets with ReLU in place of tanh, as descriptions."""
    return {
        name: format_block(with_activation(parse_block(text), "tanh", "relu"))
        for name, text in PRESETS.items()
    }
