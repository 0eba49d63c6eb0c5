"""Search-space files: plain Python files that declare one :class:`Space`.

A space file builds a ``Space`` and binds it to the module-level name
``SPACE``::

    from blocksearch import PlacementSearch, Space, TrainConfig
    from blocksearch.presets import PRESETS

    SPACE = Space(
        name="tanh_placements",
        depths=(15, 20, 25, 50),
        search=PlacementSearch(activation="tanh"),
        presets=PRESETS,
    )

Space files are ordinary Python and run with the rights of the user who loads
them, so load only files you trust.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import re
import sys
import textwrap
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import optuna

from blocksearch import ops
from blocksearch.dsl import Design, canonical
from blocksearch.errors import DslError, SpaceError
from blocksearch.strategy import PrunerSetting, SamplerSetting
from blocksearch.train import TrainConfig

__all__ = ["SearchSpace", "Space", "load_space"]


@runtime_checkable
class SearchSpace(Protocol):
    """Interface through which a trial chooses its block design."""

    def suggest(self, trial: optuna.Trial) -> str:
        """Sample parameters on ``trial`` and return a block description."""
        ...

    def params_for(self, design: str) -> dict[str, Any]:
        """Return the parameters under which :meth:`suggest` yields ``design``."""
        ...


_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Space:
    """A placement study: what to search, at which depths, on which data.

    Attributes:
        name: Identifier of the space; names the storage file and studies.
        depths: Numbers of residual blocks; one Optuna study per depth.
        search: Chooses a design per trial (e.g. a ``PlacementSearch``).
        presets: Named designs run first in every study, as descriptions.
        activation: Registered op at the end of the stem.
        width: Features inside every block.
        dataset: Default data source when neither ``--data`` nor
            ``$BLOCKSEARCH_DATA`` is given.
        train: Training protocol; ``train.epochs`` is the default budget.
        trials: Default total number of trials per study.
        sampler: ``"auto"``, ``"tpe"``, ``"random"``, ``"brute-force"``, or a
            function that builds a sampler from a seed.
        pruner: ``"median"``, ``"hyperband"``, ``"none"`` or an Optuna pruner.
            Presets are never pruned.
        warmup_epochs: Epochs a trial runs before a pruner may stop it.
        validation_size: Train images held out for selection under the
            default validation protocol.
        constraint: Returns why a design is not allowed, or None; a rejected
            design is recorded as pruned without training.
    """

    name: str
    depths: tuple[int, ...]
    search: SearchSpace
    presets: Mapping[str, str] = field(default_factory=dict)
    activation: str = "tanh"
    width: int = 256
    dataset: str = "cifar10"
    train: TrainConfig = field(default_factory=TrainConfig)
    trials: int = 20
    sampler: SamplerSetting = "auto"
    pruner: PrunerSetting = "median"
    warmup_epochs: int = 2
    validation_size: int = 5000
    constraint: Callable[[Design], str | None] | None = None
    #: Path of the file that defined the space; set by :func:`load_space`.
    source: str | None = field(default=None, compare=False, repr=False)

    def fingerprint(self) -> dict[str, str]:
        """Return, as text, what the trials of this space depend on.

        Studies store it when created, and a later run is refused when it
        differs. Depths, the trial budget, the sampler, the pruner and its
        warm-up are left out: changing them does not change what a finished
        trial means. Code defined in the space file (a custom search or a
        constraint) enters through its syntax tree, so comments and layout
        may change freely.
        """
        excluded = {"epochs", "seed", "grad_norm_every", "autocast_bf16", "compile"}
        train = ", ".join(
            f"{name}={value!r}"
            for name, value in vars(self.train).items()
            if name not in excluded
        )
        return {
            "presets": "; ".join(f"{k}: {v}" for k, v in self.presets.items()),
            "search": _describe(self.search),
            "activation": self.activation,
            "width": str(self.width),
            "train": train,
            "constraint": "none"
            if self.constraint is None
            else _describe(self.constraint),
        }

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise SpaceError(
                f"space name {self.name!r} is invalid: use letters, digits, "
                "'_', '-' and '.', starting with a letter or digit"
            )
        self._check_depths()
        if not isinstance(self.search, SearchSpace):
            raise SpaceError(
                f"space {self.name!r}: search must have suggest(trial) and "
                f"params_for(design) methods, got {type(self.search).__name__}"
            )
        for label, value, minimum in (
            ("width", self.width, 1),
            ("trials", self.trials, 1),
            ("warmup_epochs", self.warmup_epochs, 0),
            ("validation_size", self.validation_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SpaceError(
                    f"space {self.name!r}: {label} must be an integer of at least "
                    f"{minimum}, got {value!r}"
                )
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise SpaceError(
                f"space {self.name!r}: dataset must be a source such as 'cifar10' "
                f"or a folder path, got {self.dataset!r}"
            )
        self._check_activation()
        self._check_train()
        self._check_presets()

    def _check_depths(self) -> None:
        try:
            depths = tuple(self.depths)
        except TypeError:
            depths = ()
        valid = all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depths
        )
        if not depths or not valid:
            raise SpaceError(
                f"space {self.name!r}: depths must be a tuple of positive integers, "
                f"e.g. (15, 20), got {self.depths!r}"
            )
        object.__setattr__(self, "depths", depths)

    def _check_activation(self) -> None:
        if not isinstance(self.activation, str) or not ops.is_registered(
            self.activation
        ):
            raise SpaceError(
                f"space {self.name!r}: stem activation {self.activation!r} is not a "
                f"registered op; registered ops: {', '.join(ops.op_names())}"
            )
        if any(p.required for p in ops.get_op(self.activation).params):
            raise SpaceError(
                f"space {self.name!r}: stem activation {self.activation!r} needs "
                "arguments; choose one whose arguments all have defaults"
            )

    def _check_train(self) -> None:
        train = self.train
        if not isinstance(train, TrainConfig):
            raise SpaceError(
                f"space {self.name!r}: train must be a blocksearch.TrainConfig, "
                f"got {type(train).__name__}"
            )
        rules = (
            ("epochs", train.epochs >= 1, "at least 1"),
            ("batch_size", train.batch_size >= 1, "at least 1"),
            ("lr", train.lr > 0, "positive"),
            ("weight_decay", train.weight_decay >= 0, "0 or more"),
            ("grad_clip", train.grad_clip > 0, "positive"),
        )
        for field_name, valid, rule in rules:
            if not valid:
                value = getattr(train, field_name)
                raise SpaceError(
                    f"space {self.name!r}: train.{field_name} must be {rule}, "
                    f"got {value!r}"
                )

    def _check_presets(self) -> None:
        if not isinstance(self.presets, Mapping):
            raise SpaceError(
                f"space {self.name!r}: presets must map names to descriptions, "
                f"got {type(self.presets).__name__}"
            )
        presets = {}
        for preset, design in self.presets.items():
            if not isinstance(preset, str) or not isinstance(design, str):
                raise SpaceError(
                    f"space {self.name!r}: preset {preset!r} must map a name to a "
                    f"description string, got {design!r}"
                )
            try:
                presets[preset] = canonical(design)
            except DslError as error:
                raise SpaceError(
                    f"space {self.name!r}: preset {preset!r} is invalid:\n{error}"
                ) from None
            # Presets are enqueued as parameters, so each must be reachable.
            self.search.params_for(presets[preset])
        object.__setattr__(self, "presets", presets)


def _describe(thing: object) -> str:
    """Describe a search or constraint so that a change in its meaning shows.

    blocksearch's own classes are described by their fields. User code is
    described by its name, its fields, and a hash of its syntax tree.
    """
    kind = thing if inspect.isfunction(thing) else type(thing)
    if kind.__module__.startswith("blocksearch."):
        return repr(thing)
    functions = (
        [thing]
        if inspect.isfunction(thing)
        else [v for _, v in sorted(vars(kind).items()) if inspect.isfunction(v)]
    )
    trees = []
    for function in functions:
        try:
            source = textwrap.dedent(inspect.getsource(function))
            trees.append(ast.dump(ast.parse(source)))
        except (OSError, TypeError, SyntaxError):
            trees.append(function.__qualname__)  # source unavailable
    code = hashlib.sha256("\n".join(trees).encode()).hexdigest()[:12]
    fields = "" if inspect.isfunction(thing) else repr(getattr(thing, "__dict__", ""))
    return f"{kind.__qualname__} {fields} code {code}".replace("  ", " ")


def load_space(path: str | Path) -> Space:
    """Run the space file at ``path`` and return its ``SPACE``.

    The file runs as its own module; nothing is added to the caller's globals.

    Raises:
        SpaceError: If the file does not exist, fails to run, or does not bind
            ``SPACE`` to a :class:`Space`.
    """
    path = Path(path)
    if not path.is_file():
        hint = ""
        spaces = sorted(Path("spaces").glob("*.py")) if Path("spaces").is_dir() else []
        if spaces:
            hint = f"; space files here: {', '.join(str(p) for p in spaces)}"
        problem = "is a folder, not a file" if path.is_dir() else "not found"
        raise SpaceError(f"space file {str(path)!r} {problem}{hint}")

    module_name = f"blocksearch_space_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SpaceError(f"space file {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SpaceError as error:
        raise SpaceError(f"space file {str(path)!r}: {error}") from None
    except SyntaxError as error:
        raise SpaceError(
            f"space file {str(path)!r} has a syntax error at line {error.lineno}: "
            f"{error.msg}"
        ) from None
    except SystemExit as error:
        raise SpaceError(
            f"space file {str(path)!r} called sys.exit({error.code!r}) while "
            "loading; a space file must only define SPACE"
        ) from None
    except Exception as error:  # the file is user code; report, do not crash
        frames = traceback.extract_tb(error.__traceback__)
        in_file = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        line = (in_file or frames)[-1].lineno
        raise SpaceError(
            f"space file {str(path)!r} failed at line {line}: "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        sys.modules.pop(module_name, None)

    space = getattr(module, "SPACE", None)
    if not isinstance(space, Space):
        found = "nothing" if space is None else type(space).__name__
        raise SpaceError(
            f"space file {str(path)!r} must bind SPACE to a blocksearch.Space, "
            f"found {found}"
        )
    object.__setattr__(space, "source", str(path))
    return space
