"""Training protocol and metrics against direct computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blocksearch.builder import ResidualMLP
from blocksearch.data import Dataset
from blocksearch.presets import PRESETS
from blocksearch.train import (
    NonFiniteLossError,
    TrainConfig,
    dead_neuron_rate,
    seed_everything,
    train,
)

FEATURES, CLASSES, WIDTH = 12, 3, 8


def _dataset(train_count: int = 96, test_count: int = 40) -> Dataset:
    generator = torch.Generator().manual_seed(3)
    return Dataset(
        name="unit",
        train_images=torch.randn(train_count, FEATURES, generator=generator),
        train_labels=torch.randint(0, CLASSES, (train_count,), generator=generator),
        test_images=torch.randn(test_count, FEATURES, generator=generator),
        test_labels=torch.randint(0, CLASSES, (test_count,), generator=generator),
        classes=tuple(str(i) for i in range(CLASSES)),
    )


def _model(design: str = PRESETS["control"], depth: int = 2) -> ResidualMLP:
    seed_everything(0)
    return ResidualMLP(
        design, depth=depth, width=WIDTH, in_features=FEATURES, num_classes=CLASSES
    )


def test_dead_rate_all_dead_blocks():
    model = _model("scale(0.0) + scale(0.0)", depth=3)
    assert dead_neuron_rate(model, torch.randn(64, FEATURES)) == 1.0


def test_dead_rate_counts_units_per_block():
    # Block 1 zeroes everything, block 2 is x + x of a zero input: both dead.
    # With a live block 0 in front, 2 of 3 blocks are dead.
    designs = ["linear + id", "scale(0.0) + scale(0.0)", "id + id"]
    model = _model(designs, depth=3)
    assert dead_neuron_rate(model, torch.randn(64, FEATURES)) == pytest.approx(2 / 3)


def test_dead_rate_threshold_applies_to_every_sample():
    model = _model("scale(0.001) + id", depth=1)
    model.stem[0].bias.data.zero_()
    probe = torch.zeros(64, FEATURES)
    # A zero input stays zero through the stem, so every unit is dead; a BN
    # bias of 1 lifts every unit to about tanh(1) for every sample.
    assert dead_neuron_rate(model, probe) == 1.0
    model.stem[1].bias.data.fill_(1.0)
    assert dead_neuron_rate(model, probe) == 0.0


def test_dead_rate_restores_training_mode():
    model = _model()
    model.train()
    dead_neuron_rate(model, torch.randn(8, FEATURES))
    assert model.training


def test_block_grad_norms_match_retained_gradients():
    data = _dataset(train_count=32)
    config = TrainConfig(epochs=1, batch_size=32, grad_clip=1e9)

    # reference: retain_grad on every block output of the same first step
    reference = _model()
    outputs = []
    handles = [
        b.register_forward_hook(lambda m, i, o: outputs.append(o))
        for b in reference.blocks
    ]
    order = torch.randperm(32, generator=torch.Generator().manual_seed(config.seed))
    logits = reference(data.train_images[order])
    for output in outputs:
        output.retain_grad()
    nn.functional.cross_entropy(logits, data.train_labels[order]).backward()
    expected = [o.grad.norm().item() for o in outputs]
    for handle in handles:
        handle.remove()

    (metrics,) = list(train(_model(), data, config))
    assert metrics.block_grad_norms == pytest.approx(expected, rel=1e-5)


def _plain_training_losses(data: Dataset, config: TrainConfig) -> list[float]:
    """The protocol written as a plain loop, the way it is usually written."""
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.5, patience=2
    )
    order_generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(data.train_images), generator=order_generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            loss = nn.functional.cross_entropy(
                model(data.train_images[index]), data.train_labels[index]
            )
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(total / len(order))
        scheduler.step(losses[-1])
    return losses


def test_train_matches_plain_loop():
    data = _dataset()
    config = TrainConfig(epochs=4, batch_size=32)
    expected = _plain_training_losses(data, config)
    measured = [m.train_loss for m in train(_model(), data, config)]
    assert measured == pytest.approx(expected, rel=1e-4)


def test_train_halves_learning_rate_on_plateau():
    data = _dataset()
    # One full batch per epoch and a gradient clipped to almost nothing keep
    # the loss flat, so after patience 2 the scheduler halves the rate.
    config = TrainConfig(epochs=6, batch_size=96, grad_clip=1e-12, weight_decay=0.0)
    rates = [m.learning_rate for m in train(_model(), data, config)]
    assert rates[:4] == [1e-3] * 4
    assert rates[4] == pytest.approx(5e-4)


def test_train_reports_accuracy_fraction():
    data = _dataset()
    metrics = list(train(_model(), data, TrainConfig(epochs=2, batch_size=32)))
    assert [m.epoch for m in metrics] == [1, 2]
    for m in metrics:
        assert 0.0 <= m.test_accuracy <= 1.0
        assert (m.test_accuracy * len(data.test_labels)).is_integer()


def test_train_stops_on_non_finite_loss():
    data = _dataset()
    model = _model()
    model.head.weight.data.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="training loss is nan in epoch 1"):
        list(train(model, data, TrainConfig(epochs=3, batch_size=32)))
