"""Network designs with regions, canonical identity and multi-error checks."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocksearch.dsl import (
    Block,
    Design,
    Op,
    Region,
    Stage,
    canonical,
    canonical_at,
    check_text,
    design_hash,
    format_design,
    normalize,
    parse_block,
    parse_design,
)
from blocksearch.errors import DslError
from blocksearch.presets import PRESETS

EXP1 = parse_block(PRESETS["exp1"])
CONTROL = parse_block(PRESETS["control"])


def test_parse_design_regions():
    design = parse_design("1/3: exp1; control")
    assert design == Design((Region(EXP1, Fraction(1, 3)), Region(CONTROL)))


def test_parse_design_counts_and_decimals():
    design = parse_design("5: exp1; 0.25: control; exp1")
    assert [r.share for r in design.regions] == [5, Fraction(1, 4), None]


def test_preset_name_is_its_block():
    assert parse_block("exp1") == EXP1
    assert canonical("exp2") == PRESETS["exp2"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("1/3: exp1; control", "2/6: exp1; 4/6: control"),
        ("0.5: exp1; control", "1/2: exp1; 1/2: control"),
        ("exp1", "1/2: exp1; exp1"),
        ("exp1", "0: control; exp1"),
        ("3: exp1; 2: exp1; control", "5: exp1; control"),
        ("linear bn + id -> tanh", "linear  bn+ id  -> tanh  # a comment"),
        ("linear bn + id", "linear bn id + id -> id"),
        ("linear bn + tanh | linear bn + tanh", "exp1"),
    ],
)
def test_equivalent_spellings_share_canonical_and_hash(first, second):
    assert canonical(first) == canonical(second)
    assert design_hash(normalize(parse_design(first))) == design_hash(
        normalize(parse_design(second))
    )


def test_different_designs_have_different_hashes():
    hashes = {design_hash(normalize(parse_design(text))) for text in PRESETS.values()}
    assert len(hashes) == 3


def test_hash_is_stable():
    # The hash is part of stored studies; a change here orphans their records.
    assert design_hash(EXP1) == "e5c370dde6cc"


@pytest.mark.parametrize(
    ("text", "depth", "counts"),
    [
        ("1/3: exp1; control", 20, [7, 13]),
        ("1/3: exp1; 1/3: exp2; control", 20, [7, 6, 7]),
        ("1/2: exp1; control", 1, [1]),  # a half of one block rounds up
        ("5: exp1; 1/2: exp2; control", 20, [5, 10, 5]),
        ("exp1", 7, [7]),
    ],
)
def test_design_runs_at_depth(text, depth, counts):
    runs = parse_design(text).runs(depth)
    assert [count for count, _ in runs] == counts
    assert len(parse_design(text).blocks(depth)) == depth


def test_boundaries_equal_at_depth_share_hash():
    # At 20 blocks a third rounds to 7, so both designs build the same network.
    first = parse_design("1/3: exp1; control").at_depth(20)
    second = parse_design("7: exp1; control").at_depth(20)
    assert first == second
    assert canonical_at("1/3: exp1; control", 20) == canonical_at(
        "7: exp1; control", 20
    )


@pytest.mark.parametrize(
    ("text", "depth", "fragment"),
    [
        ("30: exp1; control", 20, "the regions need 30 blocks but the depth is 20"),
        ("5: exp1; 5: control", 20, "the regions cover 10 of 20 blocks"),
    ],
)
def test_design_rejects_bad_fit(text, depth, fragment):
    with pytest.raises(DslError, match=fragment):
        parse_design(text).runs(depth)


BAD_DESIGNS = [
    ("exp1; control", "only the last region may leave out its share"),
    ("1/0: exp1", "fraction has denominator 0"),
    ("1.5/2: exp1", "a fraction of the depth needs whole numbers"),
    ("-1: exp1", "invalid share '-1'"),
    ("1/3 exp1", "expected ':' or '/'"),
    ("exp1 + id", "preset 'exp1' must stand alone as a whole block"),
    ("1/3: exp1;", "expected an op name"),
    ("1/3: exp1 control", "preset 'exp1' must stand alone"),
    ("1/3: linear + id )", "unexpected ')'"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_DESIGNS)
def test_parse_design_rejects(text, fragment):
    with pytest.raises(DslError, match=_escape(fragment)):
        parse_design(text)


def _escape(fragment: str) -> str:
    import re

    return re.escape(fragment)


def test_check_reports_every_error():
    text = (
        "linear bn + tahn | linear bn + tnah -> relu\n"
        "\n"
        "# a comment between designs\n"
        "linear bn + id ->\n"
        "\n"
        "1/3: exp1; control\n"
    )
    errors = check_text(text)
    messages = [str(e) for e in errors]
    assert len(errors) == 3
    assert "unknown op 'tahn' at line 1, column 13" in messages[0]
    assert "unknown op 'tnah' at line 1, column 32" in messages[1]
    assert "unexpected end of input at line 4, column 18" in messages[2]


def test_check_accepts_valid_file():
    assert check_text("exp1\n\n1/3: exp1; control\n# trailing comment\n") == []


def test_check_command_file(tmp_path, capsys):
    from blocksearch.cli import main

    path = tmp_path / "designs.txt"
    path.write_text("linear bn + tahn\n\nlinear + relu\n\nlinear +\n")
    assert main(["check", str(path)]) == 3
    output = capsys.readouterr()
    assert "2 errors in" in output.out
    assert "line 1, column 13" in output.out
    assert "line 5, column 9" in output.out


def test_check_command_valid_text(capsys):
    from blocksearch.cli import main

    assert main(["check", "1/3: exp1; control"]) == 0
    assert "no errors" in capsys.readouterr().out


_plain = st.sampled_from(["linear", "bn", "tanh", "relu", "gelu"]).map(Op)
_path = st.lists(_plain, max_size=3).map(tuple)
_block = st.lists(
    st.builds(Stage, main=_path, skip=_path, post=_path), min_size=1, max_size=3
).map(lambda s: Block(tuple(s)))
_share = st.one_of(
    st.integers(0, 5),
    st.fractions(min_value=0, max_value=1, max_denominator=12),
)


@st.composite
def _designs(draw):
    count = draw(st.integers(1, 4))
    regions = [Region(draw(_block), draw(_share)) for _ in range(count - 1)]
    regions.append(Region(draw(_block), draw(st.one_of(st.none(), _share))))
    return Design(tuple(regions))


@given(_designs())
def test_design_round_trip(design):
    assert parse_design(format_design(design)) == design


@given(_designs())
def test_normalize_is_idempotent(design):
    once = normalize(design)
    assert normalize(once) == once
    assert canonical(format_design(once)) == format_design(once)


@given(_designs(), st.integers(1, 40))
def test_normalize_keeps_network(design, depth):
    try:
        expected = design.blocks(depth)
    except DslError:
        return  # the design does not fit this depth
    assert normalize(design).blocks(depth) == expected


def test_rest_region_absorbs_mixed_shares():
    # A count and a fraction of one block before "the rest" of that block:
    # the whole network is that block.
    design = parse_design("1: exp1; 1/1: exp1; exp1")
    assert normalize(design) == Design.uniform(EXP1)
    assert canonical("1: exp1; 1/1: exp1; exp1") == PRESETS["exp1"]
