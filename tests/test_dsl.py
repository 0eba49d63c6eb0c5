"""Parser, printer and error messages of the block description language."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocksearch import ops
from blocksearch.dsl import Block, Op, Stage, canonical, format_block, parse_block
from blocksearch.errors import DslError
from blocksearch.presets import PRESETS, preset_block


def test_parse_control_preset_records():
    block = parse_block(PRESETS["control"])
    stage = Stage(main=(Op("linear"), Op("bn")), skip=(), post=(Op("tanh"),))
    assert block == Block((stage, stage))


def test_parse_exp1_puts_tanh_on_skip():
    block = parse_block(PRESETS["exp1"])
    for stage in block.stages:
        assert stage.skip == (Op("tanh"),)
        assert stage.post == ()


def test_parse_exp2_mixes_post_and_skip():
    first, second = parse_block(PRESETS["exp2"]).stages
    assert first.post == (Op("tanh"),)
    assert first.skip == ()
    assert second.skip == (Op("tanh"),)
    assert second.post == ()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_print_as_written(name):
    assert format_block(preset_block(name)) == PRESETS[name]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linear bn+id->tanh", "linear bn + id -> tanh"),
        ("  linear\n  bn +\n id  ->  tanh  ", "linear bn + id -> tanh"),
        ("linear id bn + tanh id", "linear bn + tanh"),
        ("linear bn + id -> id", "linear bn + id"),
        ("id + id", "id + id"),
        ("dropout(p=0.25) + scale(0.5)", "dropout(0.25) + scale(0.5)"),
        ("leaky_relu + id", "leaky_relu + id"),
        ("leaky_relu(0.01) + id", "leaky_relu + id"),
        ("leaky_relu(slope=0.2) + id", "leaky_relu(0.2) + id"),
        ("elu(alpha=2) + id", "elu(2.0) + id"),
        ("scale(-1) + id", "scale(-1.0) + id"),
        ("scale(1e-3) + id", "scale(0.001) + id"),
    ],
)
def test_canonical_spelling(text, expected):
    assert canonical(text) == expected


def test_default_arguments_stored_explicitly():
    assert parse_block("leaky_relu + id") == parse_block("leaky_relu(0.01) + id")
    assert parse_block("leaky_relu + id").stages[0].main == (Op("leaky_relu", (0.01,)),)


# (description, fragment the message must contain)
BAD_INPUTS = [
    ("", "block description is empty"),
    ("   ", "block description is empty"),
    ("linear bn + tahn", "unknown op 'tahn'"),
    ("linear bn + tahn", "did you mean 'tanh'"),
    ("lnear bn + id", "did you mean 'linear'"),
    ("linear bn", "expected another op or '+'"),
    ("linear bn +", "expected an op name"),
    ("linear bn + id ->", "expected an op name"),
    ("linear bn + id -> tanh |", "expected an op name"),
    ("+ id", "unexpected '+'"),
    ("linear bn + id + tanh", "expected another op, '->', '|' or end of input"),
    ("linear bn + id !", "invalid character '!'"),
    ("linear bn + id -> tanh | | linear + id", "unexpected '|'"),
    ("dropout + id", "op 'dropout' is missing argument 'p'"),
    ("dropout() + id", "op 'dropout' is missing argument 'p'"),
    ("dropout(1.5) + id", "argument 'p' of op 'dropout' must be at least 0"),
    ("dropout(0.1, 0.2) + id", "op 'dropout' takes 1 argument, got more"),
    ("dropout(q=0.1) + id", "op 'dropout' has no argument 'q'"),
    ("dropout(p=0.1, p=0.2) + id", "got argument 'p' twice"),
    ("dropout(0.1 + id", "expected ','"),
    ("dropout(x) + id", "expected a number"),
    ("tanh(1) + id", "op 'tanh' takes 0 arguments"),
    ("scale(,) + id", "expected a number"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_INPUTS)
def test_parse_rejects_bad_input(text, fragment):
    with pytest.raises(DslError, match=_escape(fragment)):
        parse_block(text)


def _escape(fragment: str) -> str:
    import re

    return re.escape(fragment)


@pytest.mark.parametrize("text", ["\x01\x02", "\x00", "2/3: \x01; |"])
def test_control_characters_reported(text):
    from blocksearch.dsl import check_text

    errors = check_text(text)
    assert errors
    assert all(isinstance(error, DslError) for error in errors)
    echoed = str(errors[0]).splitlines()[1]  # the source line under the message
    assert echoed.isprintable()
    with pytest.raises(DslError):
        parse_block(text)


def test_error_caret_under_unknown_op():
    with pytest.raises(DslError) as info:
        parse_block("linear bn + tahn")
    lines = str(info.value).splitlines()
    assert lines[0].endswith("at line 1, column 13:")
    assert lines[1] == "  linear bn + tahn"
    assert lines[2] == "  " + " " * 12 + "^^^^"


def test_error_end_of_input_after_last_token():
    text = "linear bn + id ->   "
    with pytest.raises(DslError) as info:
        parse_block(text)
    lines = str(info.value).splitlines()
    # column 18 is just after '->', not after the trailing spaces or at 1
    assert "column 18" in lines[0]
    assert lines[2].index("^") == 2 + 17


def test_error_on_second_line_reports_line():
    with pytest.raises(DslError, match=r"line 2, column 5") as info:
        parse_block("linear bn + id\n -> tnah")
    assert "   -> tnah" in str(info.value)


def test_error_lists_registered_ops():
    with pytest.raises(DslError, match="registered ops: .*linear.*tanh"):
        parse_block("foo + id")


def test_registered_op_usable_in_description():
    from torch import nn

    ops.register_op(
        "hardtanh_test", lambda width: nn.Hardtanh(), kind=ops.OpKind.ACTIVATION
    )
    try:
        assert canonical("linear + hardtanh_test") == "linear + hardtanh_test"
    finally:
        ops.unregister_op("hardtanh_test")
    with pytest.raises(DslError, match="unknown op 'hardtanh_test'"):
        parse_block("linear + hardtanh_test")


def test_register_op_rejects_duplicate_name():
    from torch import nn

    with pytest.raises(ValueError, match="op 'tanh' is already registered"):
        ops.register_op("tanh", lambda width: nn.Tanh(), kind=ops.OpKind.ACTIVATION)


# Random blocks built from ops without arguments and with argument values that
# print exactly, for the round trip parse(format(x)) == x.
_PLAIN_OPS = ["linear", "bn", "ln", "tanh", "relu", "gelu", "silu", "sigmoid"]
_op = st.one_of(
    st.sampled_from(_PLAIN_OPS).map(Op),
    st.floats(0.0, 0.99, allow_nan=False).map(lambda p: Op("dropout", (p,))),
    st.floats(-10, 10, allow_nan=False).map(lambda f: Op("scale", (f,))),
    st.floats(0.001, 1.0).map(lambda s: Op("leaky_relu", (s,))),
)
_path = st.lists(_op, max_size=4).map(tuple)
_stage = st.builds(Stage, main=_path, skip=_path, post=_path)
_block = st.lists(_stage, min_size=1, max_size=4).map(lambda s: Block(tuple(s)))


@given(_block)
def test_round_trip_random_blocks(block):
    assert parse_block(format_block(block)) == block


@given(_block)
def test_canonical_is_idempotent(block):
    text = format_block(block)
    assert canonical(text) == text
