"""Command-line behaviour on good and bad input: messages and exit codes."""

from __future__ import annotations

import pytest

from blocksearch.cli import main
from blocksearch.presets import PRESETS


def test_compile_prints_canonical_and_module(capsys):
    assert main(["compile", "linear  bn+id->tanh | linear bn + tanh"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == PRESETS["exp2"]
    assert "ResidualBlock(" in out
    assert "Linear(in_features=256, out_features=256" in out


def test_compile_depth_prints_network(capsys):
    assert main(["compile", PRESETS["exp1"], "--depth", "20", "--width", "8"]) == 0
    out = capsys.readouterr().out
    assert "(0-19): 20 x ResidualBlock(" in out


def test_compile_bad_dsl_exits_with_message(capsys):
    assert main(["compile", "linear bn + tahn"]) == 3
    err = capsys.readouterr().err
    assert "unknown op 'tahn'" in err
    assert "did you mean 'tanh'" in err
    assert "^^^^" in err
    assert "Traceback" not in err


def test_run_missing_space_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.py")]) == 5
    err = capsys.readouterr().err
    assert "nope.py' not found" in err
    assert "Traceback" not in err


def test_run_space_file_with_syntax_error(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("SPACE = (\n")
    assert main(["run", str(path)]) == 5
    assert "has a syntax error at line 1" in capsys.readouterr().err


def test_run_space_file_without_space(tmp_path, capsys):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    assert main(["run", str(path)]) == 5
    assert (
        "must bind SPACE to a blocksearch.Space, found nothing"
        in capsys.readouterr().err
    )


def test_run_space_file_with_bad_preset(tmp_path, capsys):
    path = tmp_path / "bad_preset.py"
    path.write_text(
        "from blocksearch import PlacementSearch, Space\n"
        "SPACE = Space(name='x', depths=(2,), search=PlacementSearch(),\n"
        "              presets={'mine': 'linear bn + tahn'})\n"
    )
    assert main(["run", str(path)]) == 5
    err = capsys.readouterr().err
    assert "preset 'mine' is invalid" in err
    assert "unknown op 'tahn'" in err


def test_run_missing_dataset_leaves_no_storage(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    code = main(
        [
            "run",
            str(tiny_space),
            "--data",
            str(tmp_path / "missing"),
            "--storage",
            str(storage),
        ]
    )
    assert code == 4
    err = capsys.readouterr().err
    assert "missing" in err
    assert "Traceback" not in err
    assert not storage.exists()


def test_run_dataset_from_environment(tiny_space, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLOCKSEARCH_DATA", str(tmp_path / "from_env"))
    assert main(["run", str(tiny_space), "--storage", str(tmp_path / "s.journal")]) == 4
    assert "from_env" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--depths", "abc", "depth 'abc' in 'abc' is not a positive integer"),
        ("--depths", "20,0", "depth '0' in '20,0' is not a positive integer"),
        ("--depths", ",", "names no depth"),
        ("--trials", "0", "'0' is too small; give a whole number of 1 or more"),
        ("--epochs", "two", "'two' is not an integer"),
    ],
)
def test_run_rejects_bad_numbers(tiny_space, capsys, option, value, message):
    with pytest.raises(SystemExit) as info:
        main(["run", str(tiny_space), option, value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_run_rejects_unavailable_cuda(tiny_space, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    assert main(["run", str(tiny_space), "--device", "cuda"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def test_run_rejects_invalid_device(tiny_space, capsys):
    assert main(["run", str(tiny_space), "--device", "tpu9"]) == 2
    assert "invalid device 'tpu9'" in capsys.readouterr().err


def test_run_unwritable_storage(tiny_space, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["run", str(tiny_space), "--storage", str(blocker / "s.journal")])
    assert code == 6
    assert "cannot create storage file" in capsys.readouterr().err


def test_show_without_storage(tiny_space, tmp_path, capsys):
    code = main(["show", str(tiny_space), "--storage", str(tmp_path / "none.journal")])
    assert code == 6
    assert "not found; run 'blocksearch run" in capsys.readouterr().err


def test_debug_shows_traceback():
    from blocksearch.errors import DslError

    with pytest.raises(DslError):
        main(["--debug", "compile", "linear bn + tahn"])


def test_ops_lists_registered_ops(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "dropout(p: float)" in out
    assert "leaky_relu(slope: float = 0.01)" in out


@pytest.mark.parametrize(("signal_name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_run_signal_fails_trial_and_resumes(tmp_path, signal_name, code):
    import signal
    import subprocess
    import sys
    import time

    import optuna

    from blocksearch.study import open_storage

    space = tmp_path / "slow.py"
    space.write_text(
        "from blocksearch import PlacementSearch, Space, TrainConfig\n"
        "from blocksearch.presets import PRESETS\n"
        "SPACE = Space(name='slow', depths=(4,), search=PlacementSearch(),\n"
        "              presets=PRESETS, width=32, dataset='synthetic:1000',\n"
        "              validation_size=100,\n"
        "              train=TrainConfig(epochs=5000, batch_size=32), trials=3)\n"
    )
    storage = tmp_path / "slow.journal"
    command = [
        sys.executable,
        "-c",
        "from blocksearch.cli import entry_point; entry_point()",
        "run",
        str(space),
        "--storage",
        str(storage),
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Wait until the first trial has reported an epoch, then interrupt.
    deadline = time.monotonic() + 120
    study = None
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if storage.exists():
            try:
                study = optuna.load_study(
                    study_name="slow-depth4", storage=open_storage(storage)
                )
            except KeyError:
                continue
            trials = study.get_trials()
            if trials and trials[0].intermediate_values:
                break
    process.send_signal(getattr(signal, signal_name))
    _, err = process.communicate(timeout=60)

    assert process.returncode == code, err.decode()
    assert b"Run the same command again to resume" in err
    assert b"Traceback" not in err
    first, *waiting = optuna.load_study(
        study_name="slow-depth4", storage=open_storage(storage)
    ).get_trials()
    assert first.state == optuna.trial.TrialState.FAIL
    assert first.user_attrs["preset"] == "control"
    assert first.user_attrs["failure"] == "interrupted"
    # exp1 and exp2 stay enqueued for the next run
    assert [t.state for t in waiting] == [optuna.trial.TrialState.WAITING] * 2


def test_run_labels_inexact_trials_and_keeps_studies_apart(
    tiny_space, tmp_path, capsys
):
    import optuna

    from blocksearch.study import open_storage

    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1", "--bf16"]) == 0
    study = optuna.load_study(study_name="tiny-depth2", storage=open_storage(storage))
    assert study.user_attrs["inexact"] == ["autocast_bf16"]
    assert study.trials[0].user_attrs["inexact"] == ["autocast_bf16"]

    # the exact trainer may not add trials to a bf16 study
    assert main([*run, "--trials", "2", "--epochs", "1"]) == 6
    err = capsys.readouterr().err.replace("\n", " ")
    assert "inexact: stored ['autocast_bf16'], requested []" in err


def test_run_exact_study_records_no_inexact_option(tiny_space, tmp_path):
    import optuna

    from blocksearch.study import open_storage

    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1", "--grad-norm-every", "3"]) == 0
    study = optuna.load_study(study_name="tiny-depth2", storage=open_storage(storage))
    assert study.user_attrs["inexact"] == []
    assert "inexact" not in study.trials[0].user_attrs


def test_run_refuses_compile_without_sparse_norms(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    assert main(["run", str(tiny_space), "--storage", str(storage), "--compile"]) == 2
    assert "--compile needs --grad-norm-every above 1" in capsys.readouterr().err
    assert not storage.exists()
