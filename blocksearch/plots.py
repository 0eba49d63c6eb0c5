"""Figures of trials and studies, drawn with matplotlib into PNG files.

Learning curves and the per-block gradient-norm profile read a trial's user
attributes, so they work on trials from any storage, finished or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from optuna.trial import FrozenTrial  # noqa: E402

#: A finished trial, or a running one: both carry a number and user attributes.
AnyTrial = FrozenTrial | optuna.Trial

__all__ = ["plot_comparison", "plot_gradient_profile", "plot_learning_curves"]


def _label(trial: AnyTrial) -> str:
    # imported here: the objective imports this module through the artifacts
    from blocksearch.objective import trial_label

    return trial_label(trial)


def plot_learning_curves(trial: AnyTrial, path: Path) -> Path:
    """Draw training loss and test accuracy per epoch of one trial into ``path``."""
    losses = trial.user_attrs.get("train_loss", [])
    accuracies = trial.user_attrs.get("test_accuracy", [])
    epochs = range(1, len(losses) + 1)
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(epochs, losses, marker="o")
    loss_axes.set(xlabel="epoch", ylabel="mean training loss", title="training loss")
    accuracy_axes.plot(epochs, [100 * a for a in accuracies], marker="o")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    figure.suptitle(f"trial {trial.number} ({_label(trial)})")
    return _save(figure, path)


def plot_gradient_profile(trial: AnyTrial, path: Path) -> Path:
    """Draw the gradient norm at each block's output, first and last epoch."""
    profiles = trial.user_attrs.get("block_grad_norms", [])
    figure, axes = plt.subplots(figsize=(6, 3.5))
    if profiles:
        blocks = range(1, len(profiles[0]) + 1)
        axes.plot(blocks, profiles[0], marker=".", label="epoch 1")
        if len(profiles) > 1:
            axes.plot(blocks, profiles[-1], marker=".", label=f"epoch {len(profiles)}")
        axes.legend()
    axes.set_yscale("log")
    axes.set(
        xlabel="block (input side first)",
        ylabel="L2 norm of the gradient",
        title=f"gradient at block outputs, trial {trial.number} ({_label(trial)})",
    )
    return _save(figure, path)


def plot_comparison(trials: Sequence[FrozenTrial], path: Path, *, title: str) -> Path:
    """Draw test accuracy and training loss curves of several trials together."""
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for trial in trials:
        losses = trial.user_attrs.get("train_loss", [])
        accuracies = trial.user_attrs.get("test_accuracy", [])
        style = "-" if trial.user_attrs.get("preset") else "--"
        epochs = range(1, len(losses) + 1)
        loss_axes.plot(epochs, losses, style, label=_label(trial))
        accuracy_axes.plot(epochs, [100 * a for a in accuracies], style)
    loss_axes.set(xlabel="epoch", ylabel="mean training loss")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)")
    loss_axes.legend(fontsize="small")
    figure.suptitle(title)
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    for axes in figure.axes:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, blocks
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
