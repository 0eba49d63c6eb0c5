"""Where should tanh sit in a residual block, and does the answer change with depth?

The reference experiment: a residual MLP on CIFAR-10 whose blocks have two
stages of ``linear bn``, with one tanh per stage placed after the add (control),
on the skip edge (exp1), or one of each (exp2). This space runs those three
first at every depth. TPE then chooses up to three depth regions, and for each
region a tanh placement per stage among all combinations of main path, skip
edge and after the add.
"""

from blocksearch import PlacementSearch, RegionSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="tanh_placements",
    # 15-25 blocks is where skip-edge tanh was reported to help, and 50 blocks
    # (100 nested tanh on the skip chain) where it was reported to collapse.
    depths=(15, 20, 25, 50),
    # Up to three regions, cut at quarters, thirds or halves of the depth, so
    # that early and late blocks may place tanh differently.
    search=RegionSearch(
        PlacementSearch(activation="tanh", stages=2, main=("linear", "bn")),
        max_regions=3,
    ),
    presets=PRESETS,  # control, exp1, exp2
    activation="tanh",  # stem activation, as in the reference network
    width=256,
    dataset="cifar10",
    train=TrainConfig(
        epochs=50,  # the reference budget; use --epochs for quick looks
        batch_size=128,
        lr=1e-3,
        weight_decay=1e-4,
        grad_clip=1.0,
        seed=42,
    ),
    trials=20,  # 3 presets plus 17 sampled designs per depth
    sampler="tpe",  # region designs are too many to enumerate
    pruner="median",
    warmup_epochs=5,  # tanh networks start slowly; judge after 5 epochs
)
