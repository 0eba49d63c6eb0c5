"""Text descriptions of residual blocks: grammar, parser and canonical printer.

A block is one or more stages separated by ``|``. Each stage names the ops of
its main path, then ``+`` and the ops of its skip edge, then optionally ``->``
and the ops applied after the add::

    linear bn + id -> tanh | linear bn + tanh

computes ``h = tanh(bn(linear(x)) + x)`` and then ``y = bn(linear(h)) + tanh(h)``.
Ops are looked up in :mod:`blocksearch.ops`; an op with parameters takes them in
parentheses, by position or by name: ``dropout(0.1)``, ``leaky_relu(slope=0.2)``.
``id`` is the identity: a path made only of ``id`` computes nothing, and ``id``
next to other ops is dropped. Whitespace, including line breaks, is ignored.

Grammar::

    block := stage ("|" stage)*
    stage := path "+" path ["->" path]
    path  := op op*
    op    := NAME ["(" [arg ("," arg)*] ")"]
    arg   := [NAME "="] NUMBER
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import NamedTuple

from blocksearch import ops
from blocksearch.errors import DslError

__all__ = ["Block", "Op", "Stage", "format_block", "parse_block"]


@dataclass(frozen=True)
class Op:
    """One op of a path, with its arguments in the order of its parameters.

    Arguments left out in the text are stored with their default value, so two
    spellings of the same op compare equal.
    """

    name: str
    args: tuple[float | int, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One residual stage: ``post(main(x) + skip(x))``.

    An empty ``main`` or ``skip`` is the identity, an empty ``post`` applies
    nothing after the add.
    """

    main: tuple[Op, ...]
    skip: tuple[Op, ...] = ()
    post: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Block:
    """A residual block: stages applied one after another."""

    stages: tuple[Stage, ...]

    def __str__(self) -> str:
        return format_block(self)


# ---------------------------------------------------------------------------
# Printer


def _format_number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _format_op(op: Op) -> str:
    definition = ops.get_op(op.name)
    args = list(op.args)
    # Trailing arguments equal to their default are left out.
    while args and not definition.params[len(args) - 1].required:
        if args[-1] != definition.params[len(args) - 1].default:
            break
        args.pop()
    if not args:
        return op.name
    return f"{op.name}({', '.join(_format_number(a) for a in args)})"


def _format_path(path: tuple[Op, ...]) -> str:
    return " ".join(_format_op(op) for op in path) if path else "id"


def format_block(block: Block) -> str:
    """Return the canonical text of a block.

    ``parse_block(format_block(b)) == b`` holds for every block ``b`` built
    from registered ops.
    """
    stages = []
    for stage in block.stages:
        text = f"{_format_path(stage.main)} + {_format_path(stage.skip)}"
        if stage.post:
            text += f" -> {_format_path(stage.post)}"
        stages.append(text)
    return " | ".join(stages)


# ---------------------------------------------------------------------------
# Tokenizer


class _Token(NamedTuple):
    kind: str  # "name", "number", a punctuation string, or "end"
    text: str
    offset: int  # index into the source text
    end: int  # index just after the token


_TOKEN_PATTERN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>->|[|+(),=])
    """,
    re.VERBOSE,
)

_DESCRIPTIONS = {
    "name": "an op name",
    "number": "a number",
    "end": "end of input",
}


def _describe(kind: str) -> str:
    return _DESCRIPTIONS.get(kind, repr(kind))


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    offset = 0
    while offset < len(text):
        match = _TOKEN_PATTERN.match(text, offset)
        if match is None:
            raise _error(
                text,
                offset,
                offset + 1,
                f"invalid character {text[offset]!r}",
                expected=("an op name", "'+'", "'->'", "'|'", "'('"),
            )
        kind = match.lastgroup
        if kind == "punct":
            kind = match.group()
        if kind != "space":
            tokens.append(_Token(str(kind), match.group(), offset, match.end()))
        offset = match.end()
    # The end token sits just after the last real token, so an error at the end
    # of input points at the place where something is missing.
    end = tokens[-1].end if tokens else 0
    tokens.append(_Token("end", "", end, end))
    return tokens


# ---------------------------------------------------------------------------
# Error formatting


def _line_and_column(text: str, offset: int) -> tuple[int, int, str]:
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    if line_end == -1:
        line_end = len(text)
    line = text.count("\n", 0, offset) + 1
    return line, offset - line_start + 1, text[line_start:line_end]


def _error(
    text: str,
    start: int,
    end: int,
    message: str,
    *,
    expected: tuple[str, ...] = (),
    hint: str = "",
) -> DslError:
    line, column, source_line = _line_and_column(text, start)
    width = max(1, min(end, start + len(source_line) - column + 1) - start)
    caret = " " * (column - 1) + "^" * width
    parts = [f"{message} at line {line}, column {column}:", f"  {source_line}"]
    parts.append(f"  {caret}")
    if expected:
        parts.append(f"expected {_join_alternatives(expected)}")
    if hint:
        parts.append(hint)
    error = DslError("\n".join(parts))
    error.line = line  # type: ignore[attr-defined]
    error.column = column  # type: ignore[attr-defined]
    return error


def _join_alternatives(items: tuple[str, ...]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


# ---------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive-descent parser over the token list of one description."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, expected: tuple[str, ...]) -> DslError:
        token = self.token
        found = "end of input" if token.kind == "end" else repr(token.text)
        return _error(
            self.text, token.offset, token.end, f"unexpected {found}", expected=expected
        )

    def expect(self, kind: str, *also: str) -> _Token:
        """Consume a token of ``kind``; on a mismatch name it and ``also`` as valid."""
        if self.token.kind != kind:
            raise self.fail((_describe(kind), *also))
        return self.advance()

    def parse_block(self) -> Block:
        stages = [self.parse_stage()]
        while self.token.kind == "|":
            self.advance()
            stages.append(self.parse_stage())
        if self.token.kind != "end":
            raise self.fail(("'|'", "end of input"))  # unreachable after parse_path
        return Block(tuple(stages))

    def parse_stage(self) -> Stage:
        main = self.parse_path(followers=("+",))
        self.advance()  # "+"
        skip = self.parse_path(followers=("->", "|", "end"))
        post: tuple[Op, ...] = ()
        if self.token.kind == "->":
            self.advance()
            post = self.parse_path(followers=("|", "end"))
        return Stage(main=main, skip=skip, post=post)

    def parse_path(self, followers: tuple[str, ...]) -> tuple[Op, ...]:
        """Parse ops up to one of the ``followers`` token kinds."""
        if self.token.kind != "name":
            raise self.fail(("an op name",))
        path = []
        while self.token.kind == "name":
            path.append(self.parse_op())
        if self.token.kind not in followers:
            raise self.fail(("another op", *(_describe(f) for f in followers)))
        # ``id`` computes nothing, so it is dropped from every path.
        return tuple(op for op in path if op.name != "id")

    def parse_op(self) -> Op:
        name_token = self.advance()
        name = name_token.text
        if not ops.is_registered(name):
            raise self.unknown_op(name_token)
        definition = ops.get_op(name)
        values: dict[str, float | int] = {}
        if self.token.kind == "(":
            values = self.parse_arguments(definition, name_token)
        args = []
        for param in definition.params:
            if param.name in values:
                args.append(values[param.name])
            elif param.required:
                raise _error(
                    self.text,
                    name_token.offset,
                    self.tokens[self.index - 1].end,
                    f"op {name!r} is missing argument {param.name!r}",
                    hint=f"write it as {definition.signature()}",
                )
            else:
                args.append(param.default)
        return Op(name, tuple(args))

    def parse_arguments(
        self, definition: ops.OpDef, name_token: _Token
    ) -> dict[str, float | int]:
        self.advance()  # "("
        values: dict[str, float | int] = {}
        position = 0
        while self.token.kind != ")":
            if values or position:
                self.expect(",", "')'")
            start = self.token
            keyword = None
            if start.kind == "name" and self.tokens[self.index + 1].kind == "=":
                keyword = start.text
                self.advance()
                self.advance()
            value_token = self.expect("number")
            param = self.match_parameter(definition, keyword, position, start)
            if param.name in values:
                raise _error(
                    self.text,
                    start.offset,
                    value_token.end,
                    f"op {definition.name!r} got argument {param.name!r} twice",
                    hint=f"write it as {definition.signature()}",
                )
            values[param.name] = self.convert(definition, param, value_token)
            position += 1
        self.advance()  # ")"
        return values

    def match_parameter(
        self,
        definition: ops.OpDef,
        keyword: str | None,
        position: int,
        start: _Token,
    ) -> ops.Param:
        hint = f"write it as {definition.signature()}"
        if keyword is not None:
            for param in definition.params:
                if param.name == keyword:
                    return param
            names = [p.name for p in definition.params]
            raise _error(
                self.text,
                start.offset,
                start.end,
                f"op {definition.name!r} has no argument {keyword!r}",
                expected=tuple(repr(n) for n in names) or ("no arguments",),
                hint=hint,
            )
        if position >= len(definition.params):
            count = len(definition.params)
            noun = "argument" if count == 1 else "arguments"
            raise _error(
                self.text,
                start.offset,
                start.end,
                f"op {definition.name!r} takes {count} {noun}, got more",
                hint=hint,
            )
        return definition.params[position]

    def convert(
        self, definition: ops.OpDef, param: ops.Param, token: _Token
    ) -> float | int:
        hint = f"write it as {definition.signature()}"
        if param.type is int:
            try:
                value: float | int = int(token.text)
            except ValueError:
                raise _error(
                    self.text,
                    token.offset,
                    token.end,
                    f"argument {param.name!r} of op {definition.name!r} must be "
                    f"an integer, got {token.text!r}",
                    hint=hint,
                ) from None
        else:
            value = float(token.text)
        if param.check is not None:
            problem = param.check(value)
            if problem is not None:
                raise _error(
                    self.text,
                    token.offset,
                    token.end,
                    f"argument {param.name!r} of op {definition.name!r} {problem}, "
                    f"got {token.text}",
                    hint=hint,
                )
        return value

    def unknown_op(self, token: _Token) -> DslError:
        names = ops.op_names()
        close = difflib.get_close_matches(token.text, names, n=3, cutoff=0.6)
        hint = (
            f"did you mean {_join_alternatives(tuple(map(repr, close)))}? "
            if close
            else ""
        )
        hint += f"registered ops: {', '.join(names)}"
        return _error(
            self.text, token.offset, token.end, f"unknown op {token.text!r}", hint=hint
        )


def parse_block(text: str) -> Block:
    """Parse a block description into a :class:`Block`.

    Raises:
        DslError: On a syntax error, an unknown op or an invalid argument. The
            message shows the offending line with a caret under the fault and
            says what would have been valid there.
    """
    if not text.strip():
        raise DslError(
            "block description is empty; write at least one stage, "
            "e.g. 'linear bn + id -> tanh'"
        )
    return _Parser(text).parse_block()


def canonical(text: str) -> str:
    """Return the canonical spelling of a block description."""
    return format_block(parse_block(text))
