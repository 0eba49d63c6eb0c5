"""Training loop of the reference protocol, with per-epoch metrics.

The protocol: cross-entropy; Adam (lr 1e-3, weight decay 1e-4); gradient norm
clipped to 1.0 before each step; ReduceLROnPlateau (mode min, factor 0.5,
patience 2) stepped once per epoch on that epoch's mean training loss; batch
128, shuffled. :func:`train` yields one :class:`EpochMetrics` per epoch, so the
caller decides what to do between epochs (report to Optuna, stop early).

The whole dataset lives on the training device and batches are sliced from it
by a shuffled index, so no loader or host transfer runs per step. Loss sums
and gradient norms are accumulated on the device and read once per epoch; no
step waits for the device. With the default :class:`TrainConfig` the results
equal those of the plain loop (DataLoader, ``loss.item()`` per step) up to
floating-point rounding. ``autocast_bf16`` and ``compile`` trade that
exactness for speed; :meth:`TrainConfig.inexact_options` names those in use.
"""

from __future__ import annotations

import contextlib
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
    """Hyperparameters of one training run. Defaults are the reference protocol.

    ``grad_norm_every`` only thins out a measurement, and training itself
    does not depend on it. ``autocast_bf16`` and ``compile`` change the
    rounding of every step, so their runs differ slightly from exact ones.
    :meth:`inexact_options` names them, for labelling such runs.

    Raises:
        ValueError: If ``grad_norm_every`` is not a positive integer.
    """

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
    # Block gradient norms are gathered on steps 1, 1 + k, 1 + 2k, ... of each
    # epoch (k = grad_norm_every) and averaged over those steps. With 1, every
    # step is measured.
    grad_norm_every: int = 1
    # Inexact: forward passes of training and test evaluation run under
    # bfloat16 autocast (matrix products in bfloat16, accumulated in float32).
    autocast_bf16: bool = False
    # Inexact: training steps run the network compiled by torch.compile, which
    # fuses element-wise operations and so rounds differently. Steps that gather
    # block gradient norms run eagerly, so set grad_norm_every above 1 with it.
    compile: bool = False

    def __post_init__(self) -> None:
        every = self.grad_norm_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"grad_norm_every must be a positive integer, got {every!r}"
            )

    def inexact_options(self) -> tuple[str, ...]:
        """Return the names of the enabled options that trade exactness for speed.

        An empty tuple means the run follows the reference protocol exactly.
        """
        flags = (("autocast_bf16", self.autocast_bf16), ("compile", self.compile))
        return tuple(name for name, enabled in flags if enabled)


@dataclass(frozen=True)
class EpochMetrics:
    """Measurements taken during and after one epoch.

    ``block_grad_norms[i]`` is the L2 norm of the loss gradient with respect
    to block ``i``'s output tensor, averaged over the epoch's sampled steps
    (every step unless :attr:`TrainConfig.grad_norm_every` is above 1).
    """

    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the epoch's samples
    test_accuracy: float  # fraction in [0, 1]
    learning_rate: float  # rate used during this epoch
    block_grad_norms: tuple[float, ...]
    dead_neuron_rate: float  # fraction in [0, 1], mean over blocks
    seconds: float  # wall time of the epoch, evaluation included
    #: Accuracy on the held-out validation split, or None without one.
    validation_accuracy: float | None = None


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


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Adam:
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
    """Sums, on the device, the L2 norm of the gradient at each block output.

    Only steps run while :attr:`active` is true are measured. On those, the
    forward hooks call ``retain_grad()`` on each block output, whose hook runs
    in C++ during the backward pass, and :meth:`collect` reads the gradients
    afterwards. The forward hooks stay registered and return at once on other
    steps.
    """

    def __init__(self, model: ResidualMLP, device: torch.device) -> None:
        self.sums = torch.zeros(model.depth, device=device)  # (depth,)
        self.samples = 0  # steps added to ``sums``
        self.active = False
        self._outputs: list[Tensor | None] = [None] * model.depth
        self.handles = [
            block.register_forward_hook(self._make_forward_hook(i))
            for i, block in enumerate(model.blocks)
        ]

    def _make_forward_hook(self, index: int):
        def on_forward(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            if self.active and output.requires_grad:
                output.retain_grad()
                self._outputs[index] = output

        return on_forward

    def collect(self) -> None:
        """Add the gradients of the last backward pass to the sums, then drop
        the block outputs (and with them the step's graph)."""
        grads = [None if out is None else out.grad for out in self._outputs]
        self._outputs = [None] * len(grads)
        if all(grad is not None for grad in grads):
            # one foreach call and one add instead of two ops per block
            norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
            self.sums.add_(torch.stack(norms))
        else:
            for index, grad in enumerate(grads):
                if grad is not None:
                    norm = torch.linalg.vector_norm(grad, dtype=torch.float32)
                    self.sums[index] += norm
        self.samples += 1

    def reset(self) -> None:
        self.sums.zero_()
        self.samples = 0

    def means(self) -> list[float]:
        """Return the per-block means over the measured steps (one read)."""
        return (self.sums / max(1, self.samples)).tolist()

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
    stacked = torch.stack(outputs).float()
    dead = (stacked.abs() < threshold).all(dim=1).float().mean(dim=1)
    return float(dead.mean())


@torch.no_grad()
def _accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, batch: int, bf16: bool = False
) -> float:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    with _autocast(images.device, bf16):
        for start in range(0, len(images), batch):
            logits = model(images[start : start + batch])  # (batch, classes)
            correct += (logits.argmax(dim=1) == labels[start : start + batch]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(images))


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# torch.compile backend of ``TrainConfig.compile``. Tests swap in "aot_eager",
# which traces the same way but generates and compiles no C++ code.
_COMPILE_BACKEND = "inductor"


class _TrainingRun:
    """The state of one run of :func:`train`, one method per phase.

    :func:`train` drives it; the epoch-time benchmark calls :meth:`step`
    directly to time steady-state steps of exactly this code.

    Args:
        model: Network to train in place; moved to ``device``.
        data: Dataset, moved to ``device`` (tensors already there are shared).
        config: Protocol; see :class:`TrainConfig`.
        device: Device for the model, the data and every step.
        grad_norms: Whether block gradient norms are gathered at all. The
            benchmark turns them off to measure what they cost.
    """

    def __init__(
        self,
        model: ResidualMLP,
        data: Dataset,
        config: TrainConfig,
        device: torch.device,
        *,
        grad_norms: bool = True,
    ) -> None:
        self.model = model.to(device)
        self.data = data.to(device)
        self.config = config
        self.device = device
        self.track_grad_norms = grad_norms

        # optimization
        self.optimizer = _make_optimizer(model, config)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=config.plateau_factor,
            patience=config.plateau_patience,
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self._params = [p for p in model.parameters() if p.requires_grad]
        # fused Adam can apply the clipping itself; see _clip_and_update
        self.clip_in_adam = bool(self.optimizer.defaults.get("fused"))

        # data order, probe and per-epoch sums
        self.order_generator = torch.Generator().manual_seed(config.seed)
        probe_generator = torch.Generator().manual_seed(config.seed)
        self.probe = torch.randn(
            config.probe_samples, data.in_features, generator=probe_generator
        ).to(device)
        self.loss_sum = torch.zeros((), device=device)
        self.epoch_steps = 0
        self.meter = _BlockGradientMeter(model, device)

        # The whole network is compiled as one graph. Steps that gather block
        # gradient norms run the eager model instead, because retain_grad()
        # needs each block's output to exist outside the compiled graph.
        self.compiled_model: nn.Module | None = None
        if config.compile:
            self.compiled_model = torch.compile(model, backend=_COMPILE_BACKEND)

    def begin_epoch(self) -> Tensor:
        """Reset the epoch's sums and return its shuffled sample order (on device)."""
        self.model.train()
        self.meter.reset()
        self.loss_sum.zero_()
        self.epoch_steps = 0
        count = len(self.data.train_images)
        return torch.randperm(count, generator=self.order_generator).to(self.device)

    def step(self, index: Tensor) -> None:
        """Run one optimization step on the training samples ``index`` (batch,).

        Nothing here reads a device value back to the host.
        """
        config = self.config
        measure = (
            self.track_grad_norms and self.epoch_steps % config.grad_norm_every == 0
        )
        self.meter.active = measure
        images = self.data.train_images[index]  # (batch, in_features)
        labels = self.data.train_labels[index]  # (batch,)

        # forward
        model = self.model
        if self.compiled_model is not None and not measure:
            model = self.compiled_model
        with _autocast(self.device, config.autocast_bf16):
            logits = model(images)  # (batch, classes)
        loss = self.loss_fn(logits.float(), labels)

        # backward, then the block gradient norms of a sampled step
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if measure:
            self.meter.active = False
            self.meter.collect()

        # clip the global gradient norm and update
        self._clip_and_update()
        self.loss_sum.add_(loss.detach(), alpha=len(index))
        self.epoch_steps += 1

    def _clip_and_update(self) -> None:
        max_norm = self.config.grad_clip
        if not self.clip_in_adam:
            nn.utils.clip_grad_norm_(self._params, max_norm, foreach=True)
            self.optimizer.step()
            return
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            self.optimizer.step()
            return
        # Same total norm as clip_grad_norm_, but the gradients are not
        # rewritten. Fused Adam divides each gradient by ``grad_scale`` as it
        # reads it, and dividing by max(1, (norm + 1e-6) / max_norm) equals
        # clip_grad_norm_'s scaling up to rounding. This saves one read and
        # one write of every gradient per step.
        # NOTE: Adam.step reads ``grad_scale`` from the optimizer, which is how
        # torch.amp.GradScaler passes it. Only torch 2.14 was checked; if
        # another release differs, test_train_matches_plain_loop_when_clipping
        # fails.
        norms = torch._foreach_norm(grads, 2)
        total = torch.linalg.vector_norm(torch.stack(norms))
        scale = torch.clamp((total + 1e-6) / max_norm, min=1.0)
        self.optimizer.grad_scale = scale
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.grad_scale

    def finish_epoch(
        self, epoch: int, learning_rate: float, started: float
    ) -> EpochMetrics:
        """Schedule, evaluate and return the epoch's :class:`EpochMetrics`.

        Raises:
            NonFiniteLossError: If the epoch's mean training loss is not finite.
        """
        # schedule on the epoch's mean training loss (the epoch's one read)
        train_loss = self.loss_sum.item() / max(1, len(self.data.train_images))
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(epoch, train_loss)
        self.scheduler.step(train_loss)

        # evaluate
        test_accuracy = self.test_accuracy()
        validation_accuracy = self.validation_accuracy()
        grad_norms = self.meter.means()
        dead_rate = self.dead_rate()
        return EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            test_accuracy=test_accuracy,
            learning_rate=learning_rate,
            block_grad_norms=tuple(grad_norms),
            dead_neuron_rate=dead_rate,
            seconds=time.perf_counter() - started,
            validation_accuracy=validation_accuracy,
        )

    def validation_accuracy(self) -> float | None:
        """Return the accuracy on the validation split, or None without one."""
        data = self.data
        if data.validation_images is None:
            return None
        return _accuracy(
            self.model,
            data.validation_images,
            data.validation_labels,
            self.config.eval_batch_size,
            self.config.autocast_bf16,
        )

    def test_accuracy(self) -> float:
        """Return the accuracy on the test split, a fraction in [0, 1]."""
        data = self.data
        return _accuracy(
            self.model,
            data.test_images,
            data.test_labels,
            self.config.eval_batch_size,
            self.config.autocast_bf16,
        )

    def dead_rate(self) -> float:
        """Return the dead-neuron rate on the probe inputs, computed in float32."""
        return dead_neuron_rate(self.model, self.probe, self.config.dead_threshold)

    def close(self) -> None:
        """Remove the hooks and drop the compiled wrapper of the model."""
        self.meter.remove()
        self.compiled_model = None


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
    run = _TrainingRun(model, data, config, device)
    batch_size = config.batch_size
    try:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            learning_rate = run.optimizer.param_groups[0]["lr"]
            order = run.begin_epoch()

            # forward, backward and step over shuffled batches
            for start in range(0, len(order), batch_size):
                run.step(order[start : start + batch_size])

            # schedule, evaluate and report
            yield run.finish_epoch(epoch, learning_rate, started)
    finally:
        run.close()
