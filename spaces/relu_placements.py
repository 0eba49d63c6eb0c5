"""The ReLU control experiment: do placements still matter without saturation?

The same network and presets as the tanh space, with ReLU in place of tanh.
ReLU does not saturate for positive inputs, so nested activations on the skip
chain should hurt less. The three variants were reported within about 0.4%
of each other. Sampled trials search one placement per stage, without regions,
because this space is a control rather than a search for a new design.
"""

from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import relu_presets

SPACE = Space(
    name="relu_placements",
    depths=(20,),  # the depth at which the ReLU comparison was reported
    search=PlacementSearch(activation="relu", stages=2, main=("linear", "bn")),
    presets=relu_presets(),  # control, exp1 and exp2 with ReLU
    activation="relu",  # the stem uses the same activation as the blocks
    width=256,
    dataset="cifar10",
    train=TrainConfig(epochs=50, batch_size=128, lr=1e-3, weight_decay=1e-4, seed=42),
    trials=20,
    # 64 placements: more than 20 trials cover, so auto picks TPE; with
    # --trials 64 or more it switches to trying each placement once.
    sampler="auto",
    pruner="median",
    warmup_epochs=3,
)
