"""Training loop of the reference protocol, with per-epoch metrics.

The protocol: cross-entropy; Adam (lr 1e-3, weight decay 1e-4); gradient norm
clipped to 1.0 before each step; ReduceLROnPlateau (mode min, factor 0.5,
patience 2) stepped once per epoch on that epoch's mean training loss; batch
128, shuffled. :func:`train` yields one :class:`EpochMetrics` per epoch, so the
caller decides what to do between epochs (report to Optuna, stop early).

The whole dataset lives on the training device and batches are sliced from it
by a shuffled index, so no loader or host transfer runs per step. Loss sums
and gradient norms are accumulated on the device and read once per epoch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from blocksearch.builder import ResidualMLP
from blocksearch.errors import BlocksearchError

if TYPE_CHECKING:
    from blocksearch.data import Dataset

__all__ = [
    "EpochMetrics",
    "NonFiniteLossError",
    "TrainConfig",
    "dead_neuron_rate",
    "resolve_device",
    "seed_everything",
    "train",
]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run. Defaults are the reference protocol."""

    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # max global L2 norm of the gradient
    plateau_factor: float = 0.5
    plateau_patience: int = 2  # epochs without improvement before a cut
    seed: int = 42
    dead_threshold: float = 1e-2  # |activation| below this counts as dead
    probe_samples: int = 64  # standard-normal inputs of the dead-neuron probe
    eval_batch_size: int = 1024  # does not change results in eval mode


@dataclass(frozen=True)
class EpochMetrics:
    """Measurements taken during and after one epoch.

    ``block_grad_norms[i]`` is the L2 norm of the loss gradient with respect
    to block ``i``'s output tensor, averaged over the epoch's steps.
    """

    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the epoch's samples
    test_accuracy: float  # fraction in [0, 1]
    learning_rate: float  # rate used during this epoch
    block_grad_norms: tuple[float, ...]
    dead_neuron_rate: float  # fraction in [0, 1], mean over blocks
    seconds: float  # wall time of the epoch, evaluation included


class NonFiniteLossError(BlocksearchError):
    """Training loss that became NaN or infinite."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss is {loss} in epoch {epoch}")
        self.epoch = epoch
        self.loss = loss


def resolve_device(name: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device.

    ``"auto"`` picks CUDA when it is available, else the CPU.

    Raises:
        BlocksearchError: If CUDA is requested but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BlocksearchError(
            f"invalid device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BlocksearchError(
            f"device {name!r} requested but CUDA is not available on this machine; "
            "use --device cpu or --device auto"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device):
    # Fused Adam runs one kernel for all parameters; it exists for CPU and CUDA
    # tensors in recent torch releases, and foreach is the fallback.
    try:
        return torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=True,
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            foreach=True,
        )


class _BlockGradientMeter:
    """Sums, on the device, the L2 norm of the gradient at each block output."""

    def __init__(self, model: ResidualMLP, device: torch.device) -> None:
        self.sums = torch.zeros(model.depth, device=device)
        self.handles = [
            block.register_forward_hook(self._make_forward_hook(i))
            for i, block in enumerate(model.blocks)
        ]

    def _make_forward_hook(self, index: int):
        def on_forward(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if output.requires_grad:
                output.register_hook(lambda grad: self._add(index, grad))

        return on_forward

    def _add(self, index: int, grad: Tensor) -> None:
        self.sums[index] += torch.linalg.vector_norm(grad.detach())

    def reset(self) -> None:
        self.sums.zero_()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def dead_neuron_rate(
    model: ResidualMLP, probe: Tensor, threshold: float = 1e-2
) -> float:
    """Return the mean over blocks of the fraction of dead output units.

    A unit of a block's output is dead when its absolute value is below
    ``threshold`` for every sample of ``probe`` ``(samples, in_features)``. The
    model runs in eval mode and is put back in its previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    outputs: list[Tensor] = []
    handles = [
        block.register_forward_hook(lambda m, i, out: outputs.append(out))
        for block in model.blocks
    ]
    try:
        model(probe)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # (blocks, samples, width) -> fraction of dead units per block
    stacked = torch.stack(outputs)
    dead = (stacked.abs() < threshold).all(dim=1).float().mean(dim=1)
    return float(dead.mean())


@torch.no_grad()
def _accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch: int) -> float:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch):
        logits = model(images[start : start + batch])  # (batch, classes)
        correct += (logits.argmax(dim=1) == labels[start : start + batch]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(images))


def train(
    model: ResidualMLP,
    data: Dataset,
    config: TrainConfig,
    device: torch.device | str = "cpu",
) -> Iterator[EpochMetrics]:
    """Train ``model`` on ``data`` and yield metrics after every epoch.

    The model and the data are moved to ``device``. Seed the global generators
    with :func:`seed_everything` before building the model for reproducible
    weights; the data order and the dead-neuron probe use generators seeded
    with ``config.seed`` here.

    Raises:
        NonFiniteLossError: If an epoch's mean training loss is NaN or infinite.
    """
    device = torch.device(device)
    model.to(device)
    data = data.to(device)
    train_images, train_labels = data.train_images, data.train_labels
    count = len(train_images)

    optimizer = _make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=config.plateau_factor,
        patience=config.plateau_patience,
    )
    loss_fn = nn.CrossEntropyLoss()
    order_generator = torch.Generator().manual_seed(config.seed)
    probe_generator = torch.Generator().manual_seed(config.seed)
    probe = torch.randn(
        config.probe_samples, data.in_features, generator=probe_generator
    ).to(device)
    meter = _BlockGradientMeter(model, device)

    try:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            learning_rate = optimizer.param_groups[0]["lr"]
            model.train()
            meter.reset()
            loss_sum = torch.zeros((), device=device)
            order = torch.randperm(count, generator=order_generator).to(device)
            steps = 0

            # forward, backward and step over shuffled batches
            for start in range(0, count, config.batch_size):
                index = order[start : start + config.batch_size]
                images = train_images[index]  # (batch, in_features)
                labels = train_labels[index]  # (batch,)
                loss = loss_fn(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                loss_sum += loss.detach() * len(index)
                steps += 1

            # schedule on the epoch's mean training loss
            train_loss = loss_sum.item() / count
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(epoch, train_loss)
            scheduler.step(train_loss)

            # evaluate
            test_accuracy = _accuracy(
                model, data.test_images, data.test_labels, config.eval_batch_size
            )
            grad_norms = (meter.sums / max(1, steps)).tolist()
            dead_rate = dead_neuron_rate(model, probe, config.dead_threshold)

            yield EpochMetrics(
                epoch=epoch,
                train_loss=train_loss,
                test_accuracy=test_accuracy,
                learning_rate=learning_rate,
                block_grad_norms=tuple(grad_norms),
                dead_neuron_rate=dead_rate,
                seconds=time.perf_counter() - started,
            )
    finally:
        meter.remove()
