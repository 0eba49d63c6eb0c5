"""Choice of Optuna sampler and pruner for a study, by name.

Samplers: ``tpe`` (seeded multivariate TPE), ``random`` (a baseline),
``brute-force`` (every design once, for spaces small enough to enumerate)
and ``auto``, which takes brute force when the space has no more designs than
the trials requested and TPE otherwise. Pruners: ``median``, ``hyperband``
and ``none``; both real pruners wait ``warmup`` epochs before they judge a
trial.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from blocksearch.errors import SpaceError

__all__ = ["PRUNERS", "SAMPLERS", "choose_sampler", "make_pruner"]

SAMPLERS = ("auto", "tpe", "random", "brute-force")
PRUNERS = ("median", "hyperband", "none")

SamplerSetting = str | Callable[[int], optuna.samplers.BaseSampler]
PrunerSetting = str | optuna.pruners.BasePruner


def _space_size(search: object) -> int | None:
    size = getattr(search, "size", None)
    return size() if callable(size) else None


def choose_sampler(
    setting: SamplerSetting, search: object, trials: int, seed: int
) -> tuple[optuna.samplers.BaseSampler, str]:
    """Return the sampler for ``setting`` and one line giving the reason for it.

    Raises:
        SpaceError: If ``setting`` names no known sampler.
    """
    if callable(setting):
        return setting(seed), "sampler built by the space file"
    if setting not in SAMPLERS:
        raise SpaceError(
            f"unknown sampler {setting!r}; choose one of {', '.join(SAMPLERS)}"
        )
    size = _space_size(search)
    if setting == "auto":
        if size is not None and size <= trials:
            setting = "brute-force"
            reason = f"the space has {size} designs, no more than the {trials} trials"
        else:
            setting = "tpe"
            count = "an unknown number of" if size is None else str(size)
            reason = f"the space has {count} designs, more than {trials} trials cover"
    else:
        reason = "requested"
    if setting == "brute-force":
        # BruteForceSampler is marked experimental since Optuna 3.1; the warning
        # would repeat on every run without telling the user anything new.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.BruteForceSampler(seed=seed)
        return sampler, f"brute force: {reason}"
    if setting == "random":
        return optuna.samplers.RandomSampler(seed=seed), f"random: {reason}"
    # Multivariate TPE models the placements jointly. The searches keep their
    # parameter names fixed, so every trial has the same parameters. The
    # constant liar counts trials that other workers are running as poor, so
    # parallel workers explore apart; with one worker it changes nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, constant_liar=True
        )
    return sampler, f"TPE (multivariate, seed {seed}): {reason}"


def make_pruner(
    setting: PrunerSetting, *, warmup: int, epochs: int
) -> optuna.pruners.BasePruner:
    """Return the pruner for ``setting``; ``warmup`` epochs are never judged.

    Raises:
        SpaceError: If ``setting`` names no known pruner.
    """
    if isinstance(setting, optuna.pruners.BasePruner):
        return setting
    if setting == "median":
        # A few finished trials are needed before a median means anything.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if setting == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, warmup), max_resource=max(epochs, warmup + 1)
        )
    if setting == "none":
        return optuna.pruners.NopPruner()
    raise SpaceError(f"unknown pruner {setting!r}; choose one of {', '.join(PRUNERS)}")
