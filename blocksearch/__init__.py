"""blocksearch: search where nonlinearities belong in residual networks.

Describe a residual block in a small text language, compile it into a PyTorch
module, and run Optuna studies over activation placements per network depth.
"""

from blocksearch.builder import ResidualBlock, ResidualMLP, ResidualStage, build_block
from blocksearch.dsl import Block, Op, Stage, canonical, format_block, parse_block
from blocksearch.errors import (
    BlocksearchError,
    DataError,
    DslError,
    SpaceError,
    StudyError,
)
from blocksearch.ops import OpKind, Param, register_op
from blocksearch.placements import PlacementSearch, RegionSearch
from blocksearch.space import Space, load_space
from blocksearch.train import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "Block",
    "BlocksearchError",
    "DataError",
    "DslError",
    "Op",
    "OpKind",
    "Param",
    "PlacementSearch",
    "RegionSearch",
    "ResidualBlock",
    "ResidualMLP",
    "ResidualStage",
    "Space",
    "SpaceError",
    "Stage",
    "StudyError",
    "TrainConfig",
    "build_block",
    "canonical",
    "format_block",
    "load_space",
    "parse_block",
    "register_op",
]
