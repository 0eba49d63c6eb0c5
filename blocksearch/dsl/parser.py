"""Tokenizer and recursive-descent parser of block and design descriptions.

Every error message shows the source line with a caret under the fault and
lists the tokens that would have been valid there. :func:`check_text` goes on after an
error, at the next stage or region, so that it reports every error of a text.
"""

from __future__ import annotations

import difflib
import math
import re
from fractions import Fraction
from typing import NamedTuple

from blocksearch import ops
from blocksearch.dsl.records import Block, Design, Op, Region, Share, Stage
from blocksearch.errors import DslError

__all__ = ["check_text", "parse_block", "parse_design", "split_designs"]


class _Token(NamedTuple):
    kind: str  # "name", "number", a punctuation string, or "end"
    text: str
    offset: int  # index into the source text
    end: int  # index just after the token


_TOKEN_PATTERN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>->|[|+(),=:;/])
    """,
    re.VERBOSE,
)

_DESCRIPTIONS = {
    "name": "an op name",
    "number": "a number",
    "end": "end of input",
}

_INTEGER = re.compile(r"\d+")


def _describe(kind: str) -> str:
    return _DESCRIPTIONS.get(kind, repr(kind))


def _join_alternatives(items: tuple[str, ...]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _preset_texts() -> dict[str, str]:
    from blocksearch.presets import PRESETS

    return dict(PRESETS)


class _Source:
    """Source text and the line number its first line has in a larger file."""

    def __init__(self, text: str, first_line: int = 1) -> None:
        self.text = text
        self.first_line = first_line

    def error(
        self,
        start: int,
        end: int,
        message: str,
        *,
        expected: tuple[str, ...] = (),
        hint: str = "",
    ) -> DslError:
        """Build an error whose message points a caret at ``text[start:end]``."""
        text = self.text
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        if line_end == -1:
            line_end = len(text)
        # Control characters would act on the terminal, so each shows as one
        # replacement character, which keeps the caret under its column.
        source_line = "".join(
            c if c.isprintable() else "\ufffd" for c in text[line_start:line_end]
        )
        line = text.count("\n", 0, start) + self.first_line
        column = start - line_start + 1
        width = max(1, min(end, line_end) - start)
        parts = [
            f"{message} at line {line}, column {column}:",
            f"  {source_line}",
            "  " + " " * (column - 1) + "^" * width,
        ]
        if expected:
            parts.append(f"expected {_join_alternatives(expected)}")
        if hint:
            parts.append(hint)
        error = DslError("\n".join(parts))
        error.line = line  # type: ignore[attr-defined]
        error.column = column  # type: ignore[attr-defined]
        return error


def _tokenize(source: _Source, errors: list[DslError]) -> list[_Token]:
    """Split the source into tokens; invalid characters go into ``errors``."""
    text = source.text
    tokens = []
    offset = 0
    while offset < len(text):
        match = _TOKEN_PATTERN.match(text, offset)
        if match is None:
            errors.append(
                source.error(
                    offset,
                    offset + 1,
                    f"invalid character {text[offset]!r}",
                    expected=("an op name", "a number", "'+'", "'->'", "'|'", "';'"),
                )
            )
            offset += 1
            continue
        kind = str(match.lastgroup)
        if kind == "punct":
            kind = match.group()
        if kind != "space":
            tokens.append(_Token(kind, match.group(), offset, match.end()))
        offset = match.end()
    # The end token sits just after the last real token, so an error at the end
    # of input points at the place where something is missing.
    end = tokens[-1].end if tokens else 0
    tokens.append(_Token("end", "", end, end))
    return tokens


class _Parser:
    """Recursive-descent parser over the tokens of one description.

    With ``recover`` set, an error inside a stage is recorded and parsing goes
    on at the next ``|``, ``;`` or the end. Without it, the first error raises.
    """

    def __init__(self, source: _Source, *, recover: bool = False) -> None:
        self.source = source
        self.errors: list[DslError] = []
        self.tokens = _tokenize(source, self.errors)
        self.index = 0
        self.recover = recover
        self.presets = _preset_texts()
        self.expanding: tuple[str, ...] = ()  # presets being expanded, for cycles
        if self.errors and not recover:
            raise self.errors[0]

    # -- token helpers -----------------------------------------------------

    @property
    def token(self) -> _Token:
        # Error recovery may step past the end token; it stays the current one.
        return self.tokens[min(self.index, len(self.tokens) - 1)]

    def peek(self, distance: int = 1) -> _Token:
        return self.tokens[min(self.index + distance, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def fail(self, expected: tuple[str, ...]) -> DslError:
        token = self.token
        found = "end of input" if token.kind == "end" else repr(token.text)
        return self.source.error(
            token.offset, token.end, f"unexpected {found}", expected=expected
        )

    def expect(self, kind: str, *also: str) -> _Token:
        """Consume a token of ``kind``; on a mismatch name it and ``also`` as valid."""
        if self.token.kind != kind:
            raise self.fail((_describe(kind), *also))
        return self.advance()

    def skip_to(self, kinds: tuple[str, ...]) -> None:
        while self.token.kind not in (*kinds, "end"):
            self.advance()

    # -- grammar -------------------------------------------------------------

    def parse_design(self) -> Design:
        regions: list[Region] = []
        starts: list[_Token] = []
        while True:
            start = self.token
            region = self.parse_region()
            if region is not None:
                regions.append(region)
                starts.append(start)
            if self.token.kind != ";":
                break
            self.advance()
        if self.token.kind != "end":
            self.record(self.fail(("';'", "end of input")))
        for region, start in zip(regions[:-1], starts[:-1], strict=True):
            if region.share is None:
                self.record(
                    self.source.error(
                        start.offset,
                        start.end,
                        "only the last region may leave out its share",
                        hint="give the others a block count or a fraction, "
                        "e.g. '1/3: exp1; control'",
                    )
                )
                break
        if self.errors or not regions:
            return _placeholder_design()
        return Design(tuple(regions))

    def parse_region(self) -> Region | None:
        """Parse one region; None when recovery skipped it after an error."""
        share: Share = None
        if self.token.kind == "number" or (
            self.token.text == "rest" and self.peek().kind == ":"
        ):
            try:
                share = self.parse_share()
            except DslError as error:
                self.record(error)
                self.skip_to((":", ";"))
                if self.token.kind != ":":
                    return None
                self.advance()
        return Region(self.parse_block(region_end=True), share)

    def parse_share(self) -> Share:
        first = self.advance()
        share: Share
        if first.text == "rest":
            share = None
        elif self.token.kind == "/":
            self.advance()
            denominator = self.expect("number")
            if not (
                _INTEGER.fullmatch(first.text) and _INTEGER.fullmatch(denominator.text)
            ):
                raise self.source.error(
                    first.offset,
                    denominator.end,
                    "a fraction of the depth needs whole numbers",
                    hint="write it as e.g. 1/3",
                )
            if int(denominator.text) == 0:
                raise self.source.error(
                    denominator.offset, denominator.end, "fraction has denominator 0"
                )
            share = Fraction(int(first.text), int(denominator.text))
        elif _INTEGER.fullmatch(first.text):
            share = int(first.text)
        else:
            try:
                share = Fraction(first.text)
            except ValueError:
                share = None
            if share is None or share < 0:
                raise self.source.error(
                    first.offset,
                    first.end,
                    f"invalid share {first.text!r}",
                    hint="use a block count such as 5, or a fraction such as "
                    "1/3 or 0.25",
                )
        self.expect(":", "'/'")
        return share

    def parse_block(self, *, region_end: bool = False) -> Block:
        followers = ("|", ";", "end") if region_end else ("|", "end")
        if self.is_preset_reference():
            return self.parse_preset(followers)
        stages = []
        while True:
            start = self.index
            try:
                stages.append(self.parse_stage(followers))
            except DslError as error:
                self.record(error)
                if self.index == start:
                    self.advance()
                self.skip_to(followers)
            if self.token.kind != "|":
                break
            self.advance()
        if not region_end and self.token.kind != "end":
            self.record(self.fail(("'|'", "end of input")))
        return Block(tuple(stages))

    def is_preset_reference(self) -> bool:
        token = self.token
        return (
            token.kind == "name"
            and token.text in self.presets
            and not ops.is_registered(token.text)
            and self.peek().kind in (";", "end")
        )

    def parse_preset(self, followers: tuple[str, ...]) -> Block:
        token = self.advance()
        name = token.text
        if name in self.expanding:
            self.record(
                self.source.error(
                    token.offset, token.end, f"preset {name!r} refers to itself"
                )
            )
            return Block(())
        # A preset is parsed from its own text and then used as the block.
        inner = _Parser(_Source(self.presets[name]), recover=False)
        inner.expanding = (*self.expanding, name)
        try:
            return inner.parse_block()
        except DslError as error:
            raise self.source.error(
                token.offset, token.end, f"preset {name!r} is invalid:\n{error}"
            ) from None

    def parse_stage(self, followers: tuple[str, ...]) -> Stage:
        main = self.parse_path(("+",))
        self.advance()  # "+"
        skip = self.parse_path(("->", *followers))
        post: tuple[Op, ...] = ()
        if self.token.kind == "->":
            self.advance()
            post = self.parse_path(followers)
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
            values = self.parse_arguments(definition)
        args = []
        for param in definition.params:
            if param.name in values:
                args.append(values[param.name])
            elif param.required:
                raise self.source.error(
                    name_token.offset,
                    self.tokens[self.index - 1].end,
                    f"op {name!r} is missing argument {param.name!r}",
                    hint=f"write it as {definition.signature()}",
                )
            else:
                args.append(param.default)
        return Op(name, tuple(args))

    def parse_arguments(self, definition: ops.OpDef) -> dict[str, float | int]:
        self.advance()  # "("
        values: dict[str, float | int] = {}
        position = 0
        while self.token.kind != ")":
            if position:
                self.expect(",", "')'")
            start = self.token
            keyword = None
            if start.kind == "name" and self.peek().kind == "=":
                keyword = start.text
                self.advance()
                self.advance()
            value_token = self.expect("number")
            param = self.match_parameter(definition, keyword, position, start)
            if param.name in values:
                raise self.source.error(
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
            names = tuple(repr(p.name) for p in definition.params)
            raise self.source.error(
                start.offset,
                start.end,
                f"op {definition.name!r} has no argument {keyword!r}",
                expected=names or ("no arguments",),
                hint=hint,
            )
        if position >= len(definition.params):
            count = len(definition.params)
            noun = "argument" if count == 1 else "arguments"
            raise self.source.error(
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
        value: float | int
        if param.type is int:
            if not re.fullmatch(r"[-+]?\d+", token.text):
                raise self.source.error(
                    token.offset,
                    token.end,
                    f"argument {param.name!r} of op {definition.name!r} must be "
                    f"an integer, got {token.text!r}",
                    hint=hint,
                )
            value = int(token.text)
        else:
            value = float(token.text)
            if not math.isfinite(value):
                raise self.source.error(
                    token.offset,
                    token.end,
                    f"argument {param.name!r} of op {definition.name!r} must be a "
                    f"finite number, got {token.text[:20]!r}",
                    hint=hint,
                )
        if param.check is not None:
            problem = param.check(value)
            if problem is not None:
                raise self.source.error(
                    token.offset,
                    token.end,
                    f"argument {param.name!r} of op {definition.name!r} {problem}, "
                    f"got {token.text}",
                    hint=hint,
                )
        return value

    def unknown_op(self, token: _Token) -> DslError:
        names = ops.op_names()
        candidates = names + sorted(self.presets)
        close = difflib.get_close_matches(token.text, candidates, n=3, cutoff=0.6)
        if token.text.lower() in candidates and token.text.lower() not in close:
            close.insert(0, token.text.lower())  # names are lower case
        hint = ""
        if close:
            hint = f"did you mean {_join_alternatives(tuple(map(repr, close)))}? "
        hint += f"registered ops: {', '.join(names)}"
        message = f"unknown op {token.text!r}"
        if token.text in self.presets:
            message = f"preset {token.text!r} must stand alone as a whole block"
            hint = (
                "write it alone, or between ';' as a region, e.g. '1/2: exp1; control'"
            )
        return self.source.error(token.offset, token.end, message, hint=hint)

    def record(self, error: DslError) -> None:
        if not self.recover:
            raise error
        self.errors.append(error)


def _placeholder_design() -> Design:
    return Design((Region(Block(())),))


def _reject_empty(text: str, what: str) -> None:
    if not re.sub(r"#[^\n]*", "", text).strip():
        raise DslError(
            f"{what} is empty; write at least one stage, e.g. 'linear bn + id -> tanh'"
        )


def parse_block(text: str) -> Block:
    """Parse the description of one block, or a preset name, into a :class:`Block`.

    Raises:
        DslError: On a syntax error, an unknown op or an invalid argument. The
            message shows the offending line with a caret under the fault and
            lists what would have been valid there.
    """
    _reject_empty(text, "block description")
    parser = _Parser(_Source(text))
    block = parser.parse_block()
    return block


def parse_design(text: str) -> Design:
    """Parse a network design: one block, or regions separated by ``;``.

    Raises:
        DslError: As :func:`parse_block` does, and for a region without a share
            before the last one.
    """
    _reject_empty(text, "design")
    return _Parser(_Source(text)).parse_design()


def check_text(text: str) -> list[DslError]:
    """Return every error in ``text``, a file of designs separated by blank lines.

    Lines are numbered from the start of ``text``; ``#`` starts a comment.
    """
    errors: list[DslError] = []
    for paragraph, first_line in _paragraphs(text):
        parser = _Parser(_Source(paragraph, first_line), recover=True)
        parser.parse_design()
        errors.extend(parser.errors)
    return errors


def split_designs(text: str) -> list[str]:
    """Return the designs of ``text``, a file of designs separated by blank
    lines, as the texts of their paragraphs.

    Raises:
        DslError: The first error in ``text``, or an error when it contains
            no design at all.
    """
    errors = check_text(text)
    if errors:
        raise errors[0]
    designs = [chunk for chunk, _ in _paragraphs(text)]
    if not designs:
        raise DslError("no design found: the text has only blank lines or comments")
    return designs


def _paragraphs(text: str) -> list[tuple[str, int]]:
    """Split ``text`` at blank lines into chunks that contain more than comments."""
    chunks: list[tuple[str, int]] = []
    current: list[str] = []
    first_line = 1
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not current:
                first_line = number
            current.append(line)
            continue
        if current:
            chunks.append(("\n".join(current), first_line))
            current = []
    if current:
        chunks.append(("\n".join(current), first_line))
    return [
        (chunk, line) for chunk, line in chunks if re.sub(r"#[^\n]*", "", chunk).strip()
    ]
