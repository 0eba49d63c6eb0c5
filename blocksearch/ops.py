"""Registry of the ops a block description may use.

Each op has a name, a kind (the role it plays in gradient-path analysis), a
list of typed parameters and a factory that builds the ``nn.Module`` for a given
feature width. Users add their own ops with :func:`register_op`; the parser,
the builder and the canonical printer then treat them like built-in ones.
"""

from __future__ import annotations

import enum
import importlib.metadata
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from blocksearch.errors import DslError

logger = logging.getLogger("blocksearch.ops")

__all__ = [
    "ENTRY_POINT_GROUP",
    "OpDef",
    "OpKind",
    "Param",
    "get_op",
    "load_plugins",
    "op_names",
    "register_op",
    "unregister_op",
]


class OpKind(enum.Enum):
    """Role of an op in the unrolled gradient graph."""

    #: Carries trainable weights that mix features (a linear layer).
    WEIGHT = "weight"
    #: Elementwise nonlinearity whose derivative scales gradients.
    ACTIVATION = "activation"
    #: Normalization layer.
    NORM = "norm"
    #: Anything else: scaling, dropout, identity.
    OTHER = "other"


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Param:
    """One parameter of an op: its name, Python type and optional default."""

    name: str
    type: type[int] | type[float]
    default: Any = _NO_DEFAULT
    #: Validates a value; returns a description of the rule it breaks, or None.
    check: Callable[[Any], str | None] | None = None

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT

    def describe(self) -> str:
        text = f"{self.name}: {self.type.__name__}"
        if not self.required:
            text += f" = {self.default!r}"
        return text


@dataclass(frozen=True)
class OpDef:
    """Definition of an op: everything needed to parse, print and build it.

    ``factory(width, *args)`` returns a module that maps ``(batch, width)`` to
    ``(batch, width)``, where ``args`` follow the order of ``params``.
    """

    name: str
    kind: OpKind
    factory: Callable[..., nn.Module]
    params: tuple[Param, ...] = ()
    doc: str = ""

    def signature(self) -> str:
        """Return the op's usage, e.g. ``dropout(p: float)``."""
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(p.describe() for p in self.params)})"

    def build(self, width: int, args: tuple[float | int, ...]) -> nn.Module:
        return self.factory(width, *args)


_REGISTRY: dict[str, OpDef] = {}

#: Entry-point group through which installed packages contribute ops. Each
#: entry point names an ``OpDef`` to register, or a function of no arguments
#: that registers ops itself.
ENTRY_POINT_GROUP = "blocksearch.ops"

_plugins_loaded = False


def load_plugins() -> list[str]:
    """Register the ops of every installed ``blocksearch.ops`` entry point, once.

    A plug-in that fails to load is logged and skipped, so one broken package
    does not disable the others. Returns the names of the loaded entry points.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return []
    _plugins_loaded = True
    loaded = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry_point.load()
            if isinstance(target, OpDef):
                _REGISTRY.setdefault(target.name, target)
            else:
                target()
        except Exception as error:  # third-party code: report, do not crash
            logger.warning(
                "skipped plug-in ops %r (%s): %s: %s",
                entry_point.name,
                entry_point.value,
                type(error).__name__,
                error,
            )
            continue
        loaded.append(entry_point.name)
    return loaded


def register_op(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    kind: OpKind,
    params: tuple[Param, ...] = (),
    doc: str = "",
    replace: bool = False,
) -> OpDef:
    """Add an op to the registry and return its definition.

    Args:
        name: Identifier used in descriptions: letters, digits and
            underscores, starting with a letter or underscore.
        factory: Called as ``factory(width, *args)`` to build the module.
        kind: Role of the op in gradient-path analysis.
        params: Typed parameters, written in parentheses after the name.
        doc: One line shown in listings of ops.
        replace: Allow overwriting an op of the same name.

    Raises:
        ValueError: If ``name`` is not an identifier or is already taken and
            ``replace`` is false.
    """
    if not name.isidentifier():
        raise ValueError(
            f"op name {name!r} is invalid: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    if name in _REGISTRY and not replace:
        raise ValueError(
            f"op {name!r} is already registered; pass replace=True to override it"
        )
    op = OpDef(name=name, kind=kind, factory=factory, params=tuple(params), doc=doc)
    _REGISTRY[name] = op
    return op


def unregister_op(name: str) -> None:
    """Remove an op from the registry. Unknown names are ignored."""
    _REGISTRY.pop(name, None)


def get_op(name: str) -> OpDef:
    """Return the definition of op ``name``.

    Raises:
        DslError: If no op of that name is registered.
    """
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DslError(
            f"unknown op {name!r}; registered ops: {', '.join(op_names())}"
        ) from None


def op_names() -> list[str]:
    """Return the names of all registered ops, sorted."""
    load_plugins()
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    load_plugins()
    return name in _REGISTRY


class Scale(nn.Module):
    """Multiply the input by a fixed factor: ``y = factor * x``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _check_probability(p: float) -> str | None:
    return None if 0.0 <= p < 1.0 else "must be at least 0 and below 1"


def _check_finite(value: float) -> str | None:
    return None if math.isfinite(value) else "must be a finite number"


def _register_builtin_ops() -> None:
    activation = OpKind.ACTIVATION
    register_op("id", lambda width: nn.Identity(), kind=OpKind.OTHER, doc="identity")
    register_op(
        "linear",
        lambda width: nn.Linear(width, width),
        kind=OpKind.WEIGHT,
        doc="fully connected layer, width to width, with bias",
    )
    register_op(
        "bn", lambda width: nn.BatchNorm1d(width), kind=OpKind.NORM, doc="BatchNorm1d"
    )
    register_op(
        "ln", lambda width: nn.LayerNorm(width), kind=OpKind.NORM, doc="LayerNorm"
    )
    register_op("tanh", lambda width: nn.Tanh(), kind=activation, doc="tanh")
    register_op("relu", lambda width: nn.ReLU(), kind=activation, doc="ReLU")
    register_op("gelu", lambda width: nn.GELU(), kind=activation, doc="GELU")
    register_op("silu", lambda width: nn.SiLU(), kind=activation, doc="SiLU (swish)")
    register_op("sigmoid", lambda width: nn.Sigmoid(), kind=activation, doc="sigmoid")
    register_op(
        "elu",
        lambda width, alpha: nn.ELU(alpha),
        kind=activation,
        params=(Param("alpha", float, 1.0),),
        doc="ELU",
    )
    register_op(
        "leaky_relu",
        lambda width, slope: nn.LeakyReLU(slope),
        kind=activation,
        params=(Param("slope", float, 0.01),),
        doc="LeakyReLU with the given negative slope",
    )
    register_op(
        "dropout",
        lambda width, p: nn.Dropout(p),
        kind=OpKind.OTHER,
        params=(Param("p", float, check=_check_probability),),
        doc="dropout with drop probability p",
    )
    register_op(
        "scale",
        lambda width, factor: Scale(factor),
        kind=OpKind.OTHER,
        params=(Param("factor", float, check=_check_finite),),
        doc="multiply by a fixed factor",
    )


_register_builtin_ops()
