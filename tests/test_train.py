"""Training protocol and metrics against direct computations."""

from __future__ import annotations

import gc
import math

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from blocksearch import train as train_module
from blocksearch.builder import ResidualMLP
from blocksearch.data import Dataset
from blocksearch.presets import PRESETS
from blocksearch.train import (
    NonFiniteLossError,
    TrainConfig,
    _TrainingRun,
    dead_neuron_rate,
    seed_everything,
    train,
)

FEATURES, CLASSES, WIDTH = 12, 3, 8


@pytest.fixture(autouse=True)
def single_thread():
    """Run these tiny networks on one thread. A second thread gains nothing
    here, and when other processes share the cores every parallel region
    can wait for a scheduler time slice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
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


def test_train_matches_plain_loop_when_clipping():
    # A max norm of 0.01 clips every step, which exercises the clipping that
    # fused Adam applies through its gradient scale.
    data = _dataset()
    config = TrainConfig(epochs=3, batch_size=32, grad_clip=0.01)
    expected = _plain_training_losses(data, config)
    measured = [m.train_loss for m in train(_model(), data, config)]
    assert measured == pytest.approx(expected, rel=1e-4)
    unclipped = TrainConfig(epochs=3, batch_size=32)
    assert _plain_training_losses(data, unclipped) != pytest.approx(expected, rel=1e-4)


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


def test_speed_options_are_off_by_default():
    config = TrainConfig()
    assert config.autocast_bf16 is False
    assert config.compile is False
    assert config.grad_norm_every == 1
    assert config.inexact_options() == ()
    both = TrainConfig(autocast_bf16=True, compile=True)
    assert both.inexact_options() == ("autocast_bf16", "compile")


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_grad_norm_every_must_be_a_positive_integer(every):
    with pytest.raises(ValueError, match="grad_norm_every"):
        TrainConfig(grad_norm_every=every)


def _first_step_norms(data: Dataset, config: TrainConfig) -> list[float]:
    """Block gradient norms of the first step, by retain_grad on a fresh model."""
    model = _model()
    outputs = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: outputs.append(o))
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(data.train_images), generator=generator)
    index = order[: config.batch_size]
    logits = model(data.train_images[index])
    for output in outputs:
        output.retain_grad()
    nn.functional.cross_entropy(logits, data.train_labels[index]).backward()
    return [o.grad.norm().item() for o in outputs]


def test_grad_norm_every_samples_steps():
    data = _dataset()  # 96 samples, 3 steps of 32 per epoch
    every_step = TrainConfig(epochs=1, batch_size=32, grad_clip=1e9)
    sparse = TrainConfig(epochs=1, batch_size=32, grad_clip=1e9, grad_norm_every=5)

    (dense_metrics,) = list(train(_model(), data, every_step))
    (sparse_metrics,) = list(train(_model(), data, sparse))

    # measuring on fewer steps leaves the training itself untouched
    assert sparse_metrics.train_loss == dense_metrics.train_loss
    assert sparse_metrics.test_accuracy == dense_metrics.test_accuracy
    # with k = 5 only the epoch's first step is measured
    expected = _first_step_norms(data, sparse)
    assert sparse_metrics.block_grad_norms == pytest.approx(expected, rel=1e-5)
    assert dense_metrics.block_grad_norms != pytest.approx(expected, rel=1e-5)


def _live_tensors() -> tuple[int, int]:
    """Count the tensors the garbage collector tracks, and those with a graph."""
    gc.collect()
    # type() instead of isinstance: isinstance reads __class__, which warns on
    # some deprecated torch objects that gc also returns
    tensors = [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]
    return len(tensors), sum(1 for t in tensors if t.grad_fn is not None)


def test_train_live_tensors_stay_constant():
    data = _dataset()
    config = TrainConfig(epochs=4, batch_size=32)
    counts = [_live_tensors() for _ in train(_model(depth=3), data, config)]
    # as many live tensors after epoch 4 as after epoch 1
    assert counts[0] == counts[-1]
    # and no autograd graph held between epochs
    assert [with_graph for _, with_graph in counts] == [0, 0, 0, 0]


def test_step_keeps_no_graph():
    data = _dataset()
    run = _TrainingRun(_model(depth=3), data, TrainConfig(), torch.device("cpu"))
    try:
        order = run.begin_epoch()
        run.step(order[:32])
        after_one = _live_tensors()
        for start in range(32, 96, 32):
            run.step(order[start : start + 32])
        assert _live_tensors() == after_one
        assert after_one[1] == 0
    finally:
        run.close()


def test_bf16_autocast_trains():
    data = _dataset()
    config = TrainConfig(epochs=2, batch_size=32, autocast_bf16=True)
    metrics = list(train(_model(), data, config))
    assert [m.epoch for m in metrics] == [1, 2]
    for m in metrics:
        assert math.isfinite(m.train_loss)
        assert 0.0 <= m.test_accuracy <= 1.0
        assert all(math.isfinite(n) and n > 0 for n in m.block_grad_norms)
    # bf16 rounds differently, but the loss stays close to the float32 one
    exact = list(train(_model(), data, TrainConfig(epochs=2, batch_size=32)))
    assert metrics[0].train_loss == pytest.approx(exact[0].train_loss, rel=0.05)


def test_compile_trains_like_eager(monkeypatch):
    # "aot_eager" traces and splits forward and backward like the default
    # backend but generates no code, so the numbers match eager execution.
    monkeypatch.setattr(train_module, "_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    data = _dataset()  # 3 steps per epoch: steps 1 and 3 measure, 2 is compiled
    config = TrainConfig(epochs=2, batch_size=32, grad_norm_every=2, compile=True)
    compiled = list(train(_model(), data, config))
    assert counters["stats"]["unique_graphs"] >= 1
    eager_config = TrainConfig(epochs=2, batch_size=32, grad_norm_every=2)
    eager = list(train(_model(), data, eager_config))
    for got, want in zip(compiled, eager, strict=True):
        assert got.train_loss == pytest.approx(want.train_loss, rel=1e-4)
        assert got.test_accuracy == want.test_accuracy
        assert got.block_grad_norms == pytest.approx(want.block_grad_norms, rel=1e-4)
    torch._dynamo.reset()
