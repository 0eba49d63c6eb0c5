"""Bad input found by trying the product: each ends in one message and a code."""

from __future__ import annotations

import pytest

from blocksearch.cli import main
from blocksearch.presets import PRESETS

GOOD_SPACE = """
from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="bad",
    depths={depths},
    search=PlacementSearch(main={main}),
    presets={presets},
    width=8,
    dataset={dataset},
    activation={activation},
    train={train},
    trials=1,
    validation_size=128,
)
"""

DEFAULTS = {
    "depths": "(2,)",
    "main": "('linear', 'bn')",
    "presets": "PRESETS",
    "dataset": "'synthetic'",
    "activation": "'tanh'",
    "train": "TrainConfig(epochs=1)",
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("depths", "20", "depths must be a tuple of positive integers"),
        ("depths", "(2, True)", "depths must be a tuple of positive integers"),
        ("main", "5", "main must be a sequence of registered op names"),
        ("presets", "5", "presets must map names to descriptions, got int"),
        ("presets", "{'p': 7}", "preset 'p' must map a name to a description string"),
        ("dataset", "5", "dataset must be a source such as 'cifar10'"),
        ("activation", "'tahn'", "stem activation 'tahn' is not a registered op"),
        ("activation", "'dropout'", "stem activation 'dropout' needs arguments"),
        ("train", "5", "train must be a blocksearch.TrainConfig, got int"),
        ("train", "TrainConfig(epochs=0)", "train.epochs must be at least 1, got 0"),
        ("train", "TrainConfig(batch_size=0)", "train.batch_size must be at least 1"),
        ("train", "TrainConfig(lr=-1)", "train.lr must be positive, got -1"),
        ("train", "TrainConfig(grad_clip=0)", "train.grad_clip must be positive"),
    ],
)
def test_space_field_rejected(tmp_path, capsys, field, value, message):
    path = tmp_path / "bad.py"
    path.write_text(GOOD_SPACE.format(**{**DEFAULTS, field: value}))
    assert main(["run", str(path), "--storage", str(tmp_path / "s.journal")]) == 5
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "s.journal").exists()


def _space(tmp_path):
    path = tmp_path / "good.py"
    path.write_text(GOOD_SPACE.format(**DEFAULTS))
    return path


def test_storage_other_file_left_unchanged(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("hi\n")
    assert main(["run", str(_space(tmp_path)), "--storage", str(other)]) == 6
    assert "is not an Optuna journal file" in capsys.readouterr().err
    assert other.read_text() == "hi\n"


def test_storage_partial_record_left_unchanged(tmp_path, capsys):
    storage = tmp_path / "s.journal"
    assert main(["run", str(_space(tmp_path)), "--storage", str(storage)]) == 0
    truncated = storage.read_bytes()[:-7]
    storage.write_bytes(truncated)
    capsys.readouterr()
    assert (
        main(["run", str(_space(tmp_path)), "--storage", str(storage), "--trials", "2"])
        == 6
    )
    assert "ends with an incomplete record" in capsys.readouterr().err
    assert storage.read_bytes() == truncated


def test_storage_sqlite_file_named(tmp_path, capsys):
    database = tmp_path / "x.db"
    database.write_bytes(b"SQLite format 3\x00" + bytes(100))
    assert main(["run", str(_space(tmp_path)), "--storage", str(database)]) == 6
    assert f"--storage sqlite:///{database}" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_storage_in_memory_rejected(tmp_path, capsys, url):
    assert main(["run", str(_space(tmp_path)), "--storage", url]) == 6
    assert "is an in-memory database" in capsys.readouterr().err


def test_storage_folder_rejected(tmp_path, capsys):
    assert main(["run", str(_space(tmp_path)), "--storage", str(tmp_path)]) == 6
    assert "is a folder; give a journal file path" in capsys.readouterr().err


def test_show_lists_depths_outside_space(tmp_path, capsys):
    storage = tmp_path / "s.journal"
    space = _space(tmp_path)
    assert main(["run", str(space), "--depths", "3", "--storage", str(storage)]) == 0
    capsys.readouterr()
    assert main(["show", str(space), "--storage", str(storage)]) == 0
    assert "bad-depth3: 1 finished trials" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("mps", "no usable Apple GPU"),
        ("tpu", "invalid device 'tpu'"),
        ("", "invalid device ''"),
        ("cuda:x", "invalid device 'cuda:x'"),
    ],
)
def test_run_rejects_device(tmp_path, capsys, device, message):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an Apple GPU")
    code = 1 if device == "mps" else 2  # unavailable, or not a device name
    assert main(["run", str(_space(tmp_path)), "--device", device]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_run_rejects_empty_data(tmp_path, capsys):
    assert main(["run", str(_space(tmp_path)), "--data", ""]) == 2
    assert "--data is empty" in capsys.readouterr().err


def test_run_rejects_depth_beyond_memory(tmp_path, capsys):
    code = main(["run", str(_space(tmp_path)), "--depths", "10000000000"])
    assert code == 1
    assert "more than this machine's" in capsys.readouterr().err


def test_compile_rejects_width_beyond_memory(capsys):
    assert main(["compile", "linear + id", "--width", "99999999999"]) == 1
    assert "more than this machine's" in capsys.readouterr().err


def test_compile_rejects_depth_beyond_analysis(capsys):
    assert main(["compile", "linear + id", "--width", "1", "--depth", "20000"]) == 3
    assert "limited to 10,000 stages" in capsys.readouterr().err


def test_compile_rejects_infinite_argument(capsys):
    assert main(["compile", "leaky_relu(1e999) + id"]) == 3
    assert "must be a finite number, got '1e999'" in capsys.readouterr().err


def test_compile_suggests_lower_case(capsys):
    assert main(["compile", "LINEAR + id"]) == 3
    assert "did you mean 'linear'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Every bad input against an existing study: one message, its code, no change


def _closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _edit_space(old: str, new: str):
    def edit(tmp_path, space):
        space.write_text(space.read_text().replace(old, new))
        return []

    return edit


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def _no_folder(tmp_path, space):
    return ["--data", str(tmp_path / "missing")]


def _flat_folder(tmp_path, space):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "image.png").write_bytes(b"")
    return ["--data", str(tmp_path / "flat")]


def _unwritable_studies(tmp_path, space):
    (tmp_path / "a-file").write_text("")
    return ["--studies-dir", str(tmp_path / "a-file" / "studies"), "--storage", ""]


BAD_INPUTS = {
    "malformed DSL": (
        _edit_space("presets=PRESETS", "presets={'p': 'linear bn +'}"),
        5,
        "preset 'p' is invalid",
    ),
    "unknown op": (
        _edit_space("presets=PRESETS", "presets={'p': 'linear bnn + id'}"),
        5,
        "unknown op 'bnn'",
    ),
    "space syntax error": (
        _edit_space("trials=1,", "trials=1,,"),
        5,
        "has a syntax error at line",
    ),
    "space missing fields": (
        _edit_space("search=PlacementSearch(main=('linear', 'bn')),", ""),
        5,
        "missing 1 required positional argument: 'search'",
    ),
    "space exits": (
        _edit_space("SPACE = Space(", "import sys\nsys.exit(0)\nSPACE = Space("),
        5,
        "called sys.exit(0) while loading",
    ),
    "depth list with a gap": (
        lambda *_: ["--depths", "2,,3"],
        2,
        "depth '' in '2,,3' is not a positive integer",
    ),
    "depth not positive": (
        lambda *_: ["--depths", "0"],
        2,
        "is not a positive integer",
    ),
    "epochs not an integer": (lambda *_: ["--epochs", "1.5"], 2, "is not an integer"),
    "data folder missing": (_no_folder, 4, "missing"),
    "data folder layout": (_flat_folder, 4, "flat"),
    "storage unreachable": (
        lambda *_: ["--storage", f"postgresql://u@127.0.0.1:{_closed_port()}/x"],
        6,
        "cannot open storage",
    ),
    "storage URL malformed": (
        lambda *_: ["--storage", "nosuchdb://x"],
        6,
        "cannot open storage 'nosuchdb://x'",
    ),
    "study of another space": (
        _edit_space("TrainConfig(epochs=1)", "TrainConfig(epochs=1, lr=0.5)"),
        6,
        "created from a different space",
    ),
    "studies folder unwritable": (_unwritable_studies, 6, "cannot create storage"),
    "given design malformed": (
        lambda *_: ["--designs", "linear bn + id\n\nlinear bnn"],
        3,
        "unknown op 'bnn'",
    ),
    "given design outside the search": (
        lambda *_: ["--designs", "linear bn relu + id"],
        2,
        "is not in this placement search",
    ),
    "given designs file missing": (
        lambda tmp_path, _: ["--designs", str(tmp_path / "best.txt")],
        2,
        "does not exist",
    ),
    "given designs empty": (lambda *_: ["--designs", " "], 2, "--designs is empty"),
    "given designs folder": (
        lambda tmp_path, _: ["--designs", str(tmp_path)],
        2,
        "is a folder",
    ),
    "given designs not text": (
        lambda tmp_path, _: ["--designs", str(_write(tmp_path / "b.txt", b"\xff\xfe"))],
        2,
        "is not UTF-8 text",
    ),
    "given designs file only comments": (
        lambda tmp_path, _: ["--designs", str(_write(tmp_path / "b.txt", b"# x\n"))],
        3,
        "b.txt': no design found",
    ),
    "preset unknown": (
        lambda *_: ["--presets", "control,contrl"],
        2,
        "has no preset 'contrl'; choose from: control, exp1, exp2, or 'none'",
    ),
    "preset none among names": (
        lambda *_: ["--presets", "none,control"],
        2,
        "'none' cannot be combined with preset names",
    ),
    "preset name empty": (
        lambda *_: ["--presets", "control,"],
        2,
        "has an empty name",
    ),
    "given design a left-out preset": (
        lambda *_: ["--presets", "control", "--designs", PRESETS["exp1"]],
        2,
        "is preset exp1, which --presets leaves out; add exp1 to --presets",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_leaves_study_unchanged(tmp_path, capsys, case):
    space = _space(tmp_path)
    storage = tmp_path / "s.journal"
    assert main(["run", str(space), "--storage", str(storage)]) == 0
    before = storage.read_bytes()
    capsys.readouterr()

    make_args, code, message = BAD_INPUTS[case]
    extra = make_args(tmp_path, space)
    args = ["run", str(space), "--storage", str(storage), *extra]
    if "--storage" in extra and extra[extra.index("--storage") + 1] == "":
        args = ["run", str(space), *extra[:2]]  # the default storage location

    try:
        result = main(args)
    except SystemExit as exit_:  # argparse ends usage errors this way
        result = exit_.code
    assert result == code
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ")
    assert "Traceback" not in err
    assert storage.read_bytes() == before


@pytest.mark.parametrize("port", ["closed", "notaport"])
def test_storage_password_never_printed(tmp_path, capsys, port):
    if port == "closed":
        port = str(_closed_port())
    url = f"postgresql://user:hunter2@127.0.0.1:{port}/studies"
    assert main(["run", str(_space(tmp_path)), "--storage", url]) == 6
    err = capsys.readouterr().err
    assert "user:***@127.0.0.1" in err
    assert "hunter2" not in err


def test_space_folder_named_as_such(tmp_path, capsys):
    assert main(["run", str(tmp_path)]) == 5
    assert "is a folder, not a file" in capsys.readouterr().err
