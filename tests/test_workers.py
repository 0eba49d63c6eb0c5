"""Several workers on one study, killed workers, failing trials, changed spaces.

Workers here are real processes on a real journal file (and on PostgreSQL
when ``BLOCKSEARCH_TEST_POSTGRES`` names a server); faults are real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from blocksearch.cli import main
from blocksearch.coordination import HEARTBEAT_ATTR, fail_stale_trials, retry_once
from blocksearch.study import open_storage

#: A space whose trials take minutes, for killing a worker mid-trial.
SLOW_SPACE = """
from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="slow",
    depths=(4,),
    search=PlacementSearch(),
    presets=PRESETS,
    width=32,
    dataset="synthetic:1000",
    validation_size=100,
    train=TrainConfig(epochs={epochs}, batch_size=32),
    trials=3,
)
"""


def _command(*args: str) -> list[str]:
    entry = "from blocksearch.cli import entry_point; entry_point()"
    return [sys.executable, "-c", entry, *args]


def _trials(storage, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(
        study_name=name, storage=open_storage(storage)
    ).get_trials()


def _wait_for_epoch(storage: Path, name: str, timeout: float = 120) -> None:
    """Wait until some trial of study ``name`` has reported an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if not storage.exists():
            continue
        try:
            trials = _trials(storage, name)
        except KeyError:
            continue
        if any(t.intermediate_values for t in trials):
            return
    raise AssertionError(f"no trial of {name} reported an epoch in {timeout} s")


def _check_shared_study(trials, total: int) -> None:
    """A full study: ``total`` finished trials, no failures, presets once."""
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == total
    assert states[TrialState.FAIL] == 0
    assert states[TrialState.RUNNING] == 0
    presets = Counter(t.user_attrs.get("preset") for t in trials)
    assert presets["control"] == presets["exp1"] == presets["exp2"] == 1


# ---------------------------------------------------------------------------
# Workers


def test_workers_share_the_trial_budget(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    code = main(
        ["run", str(tiny_space), "--storage", str(storage), "--workers", "3"]
        + ["--trials", "7", "--depths", "2,3", "--device", "cpu"]
    )
    assert code == 0
    for depth in (2, 3):
        _check_shared_study(_trials(storage, f"tiny-depth{depth}"), 7)


def test_workers_capped_at_trials_left(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    args = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*args, "--trials", "3", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main([*args, "--trials", "5", "--workers", "8", "--device", "cpu"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "2 trials left to start; starting 2 workers, not 8" in err
    assert "worker 3" not in err
    _check_shared_study(_trials(storage, "tiny-depth2"), 5)


def test_processes_started_together_enqueue_presets_once(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    command = _command(
        "run", str(tiny_space), "--storage", str(storage), "--depths", "2",
        "--trials", "5", "--device", "cpu", "--threads", "1",
    )  # fmt: skip
    processes = [
        subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    _check_shared_study(_trials(storage, "tiny-depth2"), 5)


def test_workers_refuse_sqlite_before_starting(tiny_space, tmp_path, capsys):
    database = tmp_path / "s.db"
    code = main(
        ["run", str(tiny_space), "--storage", f"sqlite:///{database}"]
        + ["--workers", "2"]
    )
    assert code == 1
    assert "cannot share SQLite storage" in capsys.readouterr().err
    assert not database.exists()


# ---------------------------------------------------------------------------
# Crashes and interruptions


def test_killed_worker_trial_failed_and_retried(tmp_path):
    space = tmp_path / "slow.py"
    space.write_text(SLOW_SPACE.format(epochs=40))  # seconds per trial
    storage = tmp_path / "slow.journal"
    run = ["run", str(space), "--storage", str(storage), "--device", "cpu"]
    victim = subprocess.Popen(_command(*run), stderr=subprocess.DEVNULL)
    _wait_for_epoch(storage, "slow-depth4")
    victim.kill()
    victim.wait(timeout=30)
    killed = _trials(storage, "slow-depth4")[0]
    assert killed.state == TrialState.RUNNING  # no process has marked it yet

    # The next run finds the trial silent, fails it and retries its design.
    assert main([*run, "--stale-after", "1"]) == 0
    first, *others = _trials(storage, "slow-depth4")
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure"].startswith("stale: no heartbeat")
    retries = [t for t in others if t.user_attrs.get("retry_of") == first.number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == first.params
    assert retries[0].user_attrs["preset"] == "control"
    _check_shared_study(others, 3)


def test_interrupted_run_resumes(tmp_path):
    space = tmp_path / "slow.py"
    space.write_text(SLOW_SPACE.format(epochs=40))  # seconds per trial
    storage = tmp_path / "slow.journal"
    run = ["run", str(space), "--storage", str(storage), "--device", "cpu"]
    process = subprocess.Popen(_command(*run), stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(storage, "slow-depth4")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err

    assert main(run) == 0
    first, *others = _trials(storage, "slow-depth4")
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure"] == "interrupted"
    assert "retry_of" not in others[0].user_attrs  # presets come back on their own
    _check_shared_study(others, 3)


def test_sigterm_reaches_every_worker(tmp_path):
    space = tmp_path / "slow.py"
    space.write_text(SLOW_SPACE.format(epochs=5000))
    storage = tmp_path / "slow.journal"
    process = subprocess.Popen(
        _command("run", str(space), "--storage", str(storage), "--workers", "2"),
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_epoch(storage, "slow-depth4")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both workers mid-trial
        running = [
            t for t in _trials(storage, "slow-depth4") if t.state == TrialState.RUNNING
        ]
        if len(running) == 2:
            break
        time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    trials = _trials(storage, "slow-depth4")
    assert [t.state for t in trials].count(TrialState.RUNNING) == 0
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2
    assert all(t.user_attrs["failure"] == "interrupted" for t in failed)


def test_stale_sweep_spares_live_trials(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"))
    storage = study._storage
    silent, live = study.ask(), study.ask()
    storage.set_trial_system_attr(silent._trial_id, HEARTBEAT_ATTR, time.time() - 50)
    storage.set_trial_system_attr(live._trial_id, HEARTBEAT_ATTR, time.time())

    failed = fail_stale_trials(study, stale_after=30)

    assert [t.number for t in failed] == [silent.number]
    states = [t.state for t in study.get_trials()]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING]
    assert "50 s" in study.get_trials()[0].user_attrs["failure"]


def test_retry_happens_once(tmp_path):
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    original = study.tell(study.ask(space), state=TrialState.FAIL)
    assert retry_once(study, original)
    retry = study.ask(space)  # takes the enqueued retry
    assert retry.params == original.params
    assert retry.user_attrs["retry_of"] == original.number
    frozen = study.tell(retry, state=TrialState.FAIL)
    assert not retry_once(study, frozen)
    assert study.get_trials(states=(TrialState.WAITING,)) == []


@pytest.mark.parametrize(("kind", "value"), [("preset", "exp1"), ("given", "d")])
def test_retry_keeps_preset_or_given_design(tmp_path, kind, value):
    study = optuna.create_study(storage=open_storage(tmp_path / "s.journal"))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    trial = study.ask(space)
    trial.set_user_attr(kind, value)
    assert retry_once(study, study.tell(trial, state=TrialState.FAIL))
    assert study.ask(space).user_attrs[kind] == value


# ---------------------------------------------------------------------------
# Trials that fail


def test_crashing_trial_fails_alone(tiny_space, tmp_path, monkeypatch):
    import blocksearch.objective as objective
    from blocksearch.data import load_dataset
    from blocksearch.space import load_space
    from blocksearch.study import run_space

    calls = []
    train_seeds = objective._train_seeds

    def crash_once(trial, *args, **kwargs):
        calls.append(trial.number)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return train_seeds(trial, *args, **kwargs)

    monkeypatch.setattr(objective, "_train_seeds", crash_once)
    (study,) = run_space(
        load_space(tiny_space),
        load_dataset("synthetic"),
        storage=open_storage(tmp_path / "s.journal"),
        depths=[2],
        trials=4,
        epochs=1,
    )
    first, *others = study.get_trials()
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure"] == (
        "RuntimeError: CUDA error: an illegal memory access"
    )
    (retry,) = [t for t in others if "retry_of" in t.user_attrs]
    assert retry.user_attrs == {**retry.user_attrs, "retry_of": 0, "preset": "control"}
    _check_shared_study(others, 4)


def test_three_crashes_in_a_row_stop_the_worker(tiny_space, tmp_path, monkeypatch):
    import blocksearch.objective as objective
    from blocksearch.data import load_dataset
    from blocksearch.errors import StudyError
    from blocksearch.space import load_space
    from blocksearch.study import run_space

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(objective, "_train_seeds", crash)
    with pytest.raises(StudyError, match="3 trials in a row failed"):
        run_space(
            load_space(tiny_space),
            load_dataset("synthetic"),
            storage=open_storage(tmp_path / "s.journal"),
            depths=[2],
            trials=6,
            epochs=1,
        )


NAN_SPACE = """
import torch
from torch import nn

from blocksearch import Space, TrainConfig, ops
from blocksearch.dsl import canonical
from blocksearch.presets import PRESETS


class Poison(nn.Module):
    def forward(self, x):
        return x * torch.nan if self.training else x


ops.register_op("poison", lambda width: Poison(), kind=ops.OpKind.OTHER, replace=True)
DESIGNS = {**PRESETS, "poisoned": "linear bn poison + id -> tanh"}


class Listed:
    def suggest(self, trial):
        return DESIGNS[trial.suggest_categorical("design", sorted(DESIGNS))]

    def params_for(self, design):
        names = [k for k, v in DESIGNS.items() if canonical(v) == design]
        return {"design": names[0]}


SPACE = Space(
    name="nan",
    depths=(2,),
    search=Listed(),
    presets=DESIGNS,
    width=16,
    dataset="synthetic",
    validation_size=128,
    train=TrainConfig(epochs=2, batch_size=64),
    trials=4,
)
"""


def test_nan_loss_prunes_trial_and_study_goes_on(tmp_path):
    space = tmp_path / "nan.py"
    space.write_text(NAN_SPACE)
    storage = tmp_path / "nan.journal"
    code = main(["run", str(space), "--storage", str(storage), "--device", "cpu"])
    assert code == 0
    trials = {t.user_attrs["preset"]: t for t in _trials(storage, "nan-depth2")}
    poisoned = trials.pop("poisoned")
    assert poisoned.state == TrialState.PRUNED
    assert poisoned.user_attrs["failure"] == "training loss is nan in epoch 1"
    assert {t.state for t in trials.values()} == {TrialState.COMPLETE}


# ---------------------------------------------------------------------------
# Changed spaces


def test_changed_space_refused_storage_unchanged(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1"]) == 0
    before = storage.read_bytes()
    tiny_space.write_text(tiny_space.read_text().replace("width=16", "width=24"))

    code = main([*run, "--trials", "2", "--epochs", "1"])

    err = capsys.readouterr().err
    assert code == 6
    assert "created from a different space" in err
    assert "width: stored '16', now '24'" in err
    assert storage.read_bytes() == before


def test_space_comments_and_budget_may_change(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    run = ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
    assert main([*run, "--trials", "1", "--epochs", "1"]) == 0
    tiny_space.write_text(
        "# a comment\n" + tiny_space.read_text().replace("trials=4", "trials=5  # more")
    )
    assert main([*run, "--trials", "2", "--epochs", "1"]) == 0
    assert len(_trials(storage, "tiny-depth2")) == 2


def test_space_of_same_name_refused(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    assert (
        main(
            ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
            + ["--trials", "1", "--epochs", "1"]
        )
        == 0
    )
    other = tmp_path / "other.py"
    other.write_text(tiny_space.read_text().replace("batch_size=64", "batch_size=32"))
    code = main(
        ["run", str(other), "--storage", str(storage), "--depths", "2"]
        + ["--trials", "1", "--epochs", "1"]
    )
    err = capsys.readouterr().err
    assert code == 6
    assert f"(file {str(tiny_space)!r})" in err.replace("\n", "")
    assert "batch_size=64" in err.replace("\n", "")


# ---------------------------------------------------------------------------
# PostgreSQL

POSTGRES_URL = os.environ.get("BLOCKSEARCH_TEST_POSTGRES")


@pytest.mark.skipif(
    not POSTGRES_URL and os.environ.get("CI") != "true",
    reason="set BLOCKSEARCH_TEST_POSTGRES to a PostgreSQL URL to run",
)
def test_three_workers_on_postgres(tiny_space, tmp_path):
    assert POSTGRES_URL, "CI must start PostgreSQL and set BLOCKSEARCH_TEST_POSTGRES"
    name = f"tiny{os.getpid()}"
    tiny_space.write_text(tiny_space.read_text().replace('"tiny"', f'"{name}"'))
    code = main(
        ["run", str(tiny_space), "--storage", POSTGRES_URL, "--workers", "3"]
        + ["--trials", "6", "--depths", "2", "--device", "cpu"]
        + ["--artifact-dir", str(tmp_path / "artifacts")]
    )
    assert code == 0
    _check_shared_study(_trials(POSTGRES_URL, f"{name}-depth2"), 6)


def test_parallel_workers_seed_samplers_apart(tiny_space, tmp_path):
    from dataclasses import replace

    from blocksearch.data import load_dataset
    from blocksearch.space import load_space
    from blocksearch.study import open_study, plan_space, prepare_data

    storage = open_storage(tmp_path / "s.journal")
    (plan,) = plan_space(load_space(tiny_space), depths=[2], sampler="random")
    data = prepare_data(plan.space, load_dataset("synthetic"))
    first = open_study(plan, storage, data).sampler
    second = open_study(replace(plan, worker=1), storage, data).sampler
    again = open_study(plan, storage, data).sampler
    draws = [s._rng.rng.randint(1 << 30) for s in (first, second, again)]
    assert draws[0] == draws[2] != draws[1]


def test_workers_train_given_design(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    design = "linear bn tanh + id | linear bn + id -> tanh"  # not a preset
    code = main(
        ["run", str(tiny_space), "--storage", str(storage), "--depths", "2"]
        + ["--workers", "2", "--trials", "2", "--device", "cpu"]
        + ["--presets", "control", "--designs", design]
    )
    assert code == 0
    trials = _trials(storage, "tiny-depth2")
    assert sorted(
        (t.user_attrs.get("preset", ""), t.user_attrs.get("given", "")) for t in trials
    ) == [("", design), ("control", "")]
    assert all(t.state == TrialState.COMPLETE for t in trials)
