"""End-to-end runs of a space on synthetic data, through the command line."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from blocksearch.cli import main
from blocksearch.dsl import canonical
from blocksearch.presets import PRESETS
from blocksearch.study import open_storage, plan_space


def _load(path, name="tiny-depth2"):
    return optuna.load_study(study_name=name, storage=open_storage(path))


def test_run_creates_presets_then_sampled_trials(tiny_space, tmp_path):
    storage = tmp_path / "studies" / "tiny.journal"
    code = main(
        [
            "run",
            str(tiny_space),
            "--depths",
            "2",
            "--storage",
            str(storage),
            "--device",
            "cpu",
        ]
    )
    assert code == 0

    trials = _load(storage).get_trials()
    assert len(trials) == 4
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert [t.user_attrs.get("preset") for t in trials[:3]] == [
        "control",
        "exp1",
        "exp2",
    ]
    assert "preset" not in trials[3].user_attrs
    for trial, name in zip(trials[:3], ["control", "exp1", "exp2"], strict=True):
        assert trial.user_attrs["dsl"] == PRESETS[name]


def test_run_stores_metrics_per_epoch(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "1",
                "--epochs",
                "3",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )

    (trial,) = _load(storage).get_trials()
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert trial.value == trial.intermediate_values[3]
    attrs = trial.user_attrs
    assert attrs["seed"] == 42
    assert attrs["depth"] == 2
    for key in (
        "train_loss",
        "test_accuracy",
        "validation_accuracy",
        "learning_rate",
        "dead_neuron_rate",
    ):
        assert len(attrs[key]) == 3, key
        assert all(math.isfinite(v) for v in attrs[key]), key
    assert attrs["learning_rate"][0] == pytest.approx(1e-3)
    assert [len(norms) for norms in attrs["block_grad_norms"]] == [2, 2, 2]
    assert all(n > 0 for n in attrs["block_grad_norms"][0])
    # The default protocol selects on the validation split, never on test.
    assert attrs["validation_accuracy"] == [
        trial.intermediate_values[e] for e in (1, 2, 3)
    ]
    assert attrs["test_accuracy"] != attrs["validation_accuracy"]


def test_second_run_adds_trials_without_preset_copies(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    args = ["run", str(tiny_space), "--depths", "2", "--storage", str(storage)]
    assert main([*args, "--trials", "4"]) == 0
    assert main([*args, "--trials", "6"]) == 0

    trials = _load(storage).get_trials()
    assert len(trials) == 6
    presets = [t.user_attrs["preset"] for t in trials if "preset" in t.user_attrs]
    assert presets == ["control", "exp1", "exp2"]
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_run_with_few_trials_enqueues_only_those(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    args = ["run", str(tiny_space), "--depths", "2", "--storage", str(storage)]
    assert main([*args, "--trials", "2"]) == 0
    trials = _load(storage).get_trials()
    assert [t.user_attrs.get("preset") for t in trials] == ["control", "exp1"]
    assert all(t.state == TrialState.COMPLETE for t in trials)

    assert main([*args, "--trials", "3"]) == 0
    trials = _load(storage).get_trials()
    assert [t.user_attrs.get("preset") for t in trials] == ["control", "exp1", "exp2"]


def test_run_twice_same_trials_runs_nothing(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    args = [
        "run",
        str(tiny_space),
        "--depths",
        "2",
        "--trials",
        "3",
        "--storage",
        str(storage),
    ]
    assert main(args) == 0
    before = storage.read_bytes()
    assert main(args) == 0
    assert len(_load(storage).get_trials()) == 3
    assert storage.read_bytes() == before


def test_run_each_depth_gets_a_study(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--trials",
                "1",
                "--epochs",
                "1",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    names = sorted(
        s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))
    )
    assert names == ["tiny-depth2", "tiny-depth3"]


def test_run_default_storage_named_after_space(tiny_space, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            ["run", str(tiny_space), "--depths", "2", "--trials", "1", "--epochs", "1"]
        )
        == 0
    )
    assert (tmp_path / "studies" / "tiny.journal").is_file()


def test_run_rejects_changed_epochs(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    args = [
        "run",
        str(tiny_space),
        "--depths",
        "2",
        "--trials",
        "1",
        "--storage",
        str(storage),
    ]
    assert main([*args, "--epochs", "1"]) == 0
    before = storage.read_bytes()
    assert main([*args, "--trials", "2", "--epochs", "2"]) == 6
    err = capsys.readouterr().err
    assert "epochs: stored 1, requested 2" in err
    assert storage.read_bytes() == before


def test_run_same_seed_reproduces_trial(tiny_space, tmp_path):
    values = []
    for name in ("a", "b"):
        storage = tmp_path / f"{name}.journal"
        assert (
            main(
                [
                    "run",
                    str(tiny_space),
                    "--depths",
                    "2",
                    "--trials",
                    "1",
                    "--storage",
                    str(storage),
                ]
            )
            == 0
        )
        values.append(_load(storage).trials[0].user_attrs["train_loss"])
    assert values[0] == values[1]


def test_run_real_space_file_on_synthetic_data(tmp_path):
    storage = tmp_path / "s.journal"
    args = [
        "run",
        "spaces/tanh_placements.py",
        "--depths",
        "2",
        "--trials",
        "4",
        "--epochs",
        "1",
        "--data",
        "synthetic",
        "--validation-size",
        "100",
        "--storage",
        str(storage),
    ]
    assert main(args) == 0
    study = _load(storage, "tanh_placements-depth2")
    trials = study.get_trials()
    assert [t.user_attrs.get("preset") for t in trials[:3]] == [
        "control",
        "exp1",
        "exp2",
    ]
    assert study.user_attrs["dataset"] == "synthetic"
    assert study.user_attrs["validation_size"] == 100


def test_show_prints_presets_and_best(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "5",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["show", str(tiny_space), "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "tiny-depth2: 5 finished trials" in out
    for name in ("control", "exp1", "exp2"):
        assert name in out
    for trial in _load(storage).get_trials()[3:]:
        if "duplicate_of" in trial.user_attrs:
            assert f"#{trial.number}" not in out
        else:
            assert f"#{trial.number}" in out
    assert "epoch 2" in out


def test_show_piped_keeps_rows_whole(tiny_space, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    storage = tmp_path / "s.journal"
    args = ["--depths", "2", "--storage", str(storage)]
    assert main(["run", str(tiny_space), "--trials", "1", *args]) == 0
    capsys.readouterr()
    assert main(["show", str(tiny_space), *args[2:]]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "control" in line]
    assert len(rows) == 1
    assert PRESETS["control"] in rows[0]


def test_run_stores_path_stats_and_hash(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "2",
                "--epochs",
                "1",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    control, exp1 = _load(storage).get_trials()
    assert control.user_attrs["path_stats"]["paths"] == "16"
    assert control.user_attrs["path_stats"]["activations"]["mean"] == 4.0
    assert exp1.user_attrs["path_stats"]["activations"]["mean"] == 2.0
    assert control.user_attrs["design_hash"] != exp1.user_attrs["design_hash"]
    assert len(control.user_attrs["design_hash"]) == 12


SINGLE_DESIGN_SPACE = """
from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="single",
    depths=(2,),
    # Every sampled trial proposes tanh after the add: the control design.
    search=PlacementSearch(choices=("post", "skip")),
    presets={"control": PRESETS["control"]},
    width=16,
    dataset="synthetic",
    validation_size=128,
    train=TrainConfig(epochs=1, batch_size=64),
    trials=3,
)
"""


def _single_design_space(tmp_path, monkeypatch):
    path = tmp_path / "single.py"
    path.write_text(SINGLE_DESIGN_SPACE)
    # Force the sampler onto the control placement for every sampled trial.
    monkeypatch.setattr(
        optuna.samplers.TPESampler,
        "sample_independent",
        lambda self, study, trial, name, distribution: "post",
    )
    return path


def test_duplicate_design_not_trained(tmp_path, monkeypatch):
    space = _single_design_space(tmp_path, monkeypatch)
    storage = tmp_path / "s.journal"
    assert main(["run", str(space), "--storage", str(storage)]) == 0

    control, first, second = _load(storage, "single-depth2").get_trials()
    assert control.user_attrs["preset"] == "control"
    for trial in (first, second):
        assert trial.user_attrs["duplicate_of"] == 0
        assert trial.value == control.value
        assert "train_loss" not in trial.user_attrs
        assert trial.user_attrs["design_hash"] == control.user_attrs["design_hash"]


def test_repeat_duplicates_trains_again(tmp_path, monkeypatch):
    space = _single_design_space(tmp_path, monkeypatch)
    storage = tmp_path / "s.journal"
    assert (
        main(["run", str(space), "--storage", str(storage), "--repeat-duplicates"]) == 0
    )
    trials = _load(storage, "single-depth2").get_trials()
    assert all("duplicate_of" not in t.user_attrs for t in trials)
    assert all(len(t.user_attrs["train_loss"]) == 1 for t in trials)


def test_show_theory_prints_correlations(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "5",
                "--epochs",
                "1",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["show", str(tiny_space), "--storage", str(storage), "--theory"]) == 0
    out = capsys.readouterr().out
    assert "tiny-depth2: path statistics against the objective" in out
    assert "mean activations per path" in out
    assert "skip-chain activations" in out


CONSTRAINED_SPACE = """
from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="constrained",
    depths=(2,),
    search=PlacementSearch(),
    presets={"control": PRESETS["control"]},
    width=16,
    dataset="synthetic",
    validation_size=128,
    train=TrainConfig(epochs=1, batch_size=64),
    trials=3,
    # Rejects every design, presets included, to show presets are exempt.
    constraint=lambda design: "no design is allowed",
)
"""


def test_constraint_rejects_sampled_designs(tmp_path):
    path = tmp_path / "constrained.py"
    path.write_text(CONSTRAINED_SPACE)
    storage = tmp_path / "s.journal"
    assert main(["run", str(path), "--storage", str(storage)]) == 0

    control, *sampled = _load(storage, "constrained-depth2").get_trials()
    assert control.state == TrialState.COMPLETE
    assert "rejected" not in control.user_attrs
    assert len(sampled) == 2
    for trial in sampled:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["rejected"] == "no design is allowed"
        assert "train_loss" not in trial.user_attrs


def test_run_logs_sampler_choice(tiny_space, tmp_path, caplog):
    import logging

    from blocksearch.data import load_dataset
    from blocksearch.space import load_space
    from blocksearch.study import run_space

    logger = logging.getLogger("blocksearch")
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    try:
        run_space(
            load_space(tiny_space),
            load_dataset("synthetic"),
            storage=open_storage(tmp_path / "s.journal"),
            depths=[2],
            trials=1,
            epochs=1,
            sampler="random",
            pruner="none",
        )
    finally:
        logger.removeHandler(caplog.handler)
    assert "tiny-depth2 sampler: random: requested" in caplog.text


def test_failed_preset_enqueued_again(tiny_space, tmp_path):
    from blocksearch.space import load_space
    from blocksearch.study import _enqueue_presets

    storage = tmp_path / "s.journal"
    study = optuna.create_study(study_name="x", storage=open_storage(storage))
    (plan,) = plan_space(load_space(tiny_space), depths=[2], trials=3)
    assert _enqueue_presets(study, plan, 3) == ["control", "exp1", "exp2"]
    trial = study.ask()  # takes the waiting control trial
    study.tell(trial, state=TrialState.FAIL)
    assert _enqueue_presets(study, plan, 3) == ["control"]
    assert _enqueue_presets(study, plan, 3) == []


def test_artifacts_plots_and_weights(tiny_space, tmp_path):
    from PIL import Image

    storage = tmp_path / "s.journal"
    artifacts = tmp_path / "artifacts"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "3",
                "--storage",
                str(storage),
                "--artifact-dir",
                str(artifacts),
            ]
        )
        == 0
    )

    study = _load(storage)
    for trial in study.get_trials():
        metas = optuna.artifacts.get_all_artifact_meta(
            trial, storage=open_storage(storage)
        )
        names = sorted(meta.filename for meta in metas)
        assert names == ["gradient_profile.png", "learning_curves.png"]
        for meta in metas:
            with Image.open(artifacts / meta.artifact_id) as image:
                assert image.format == "PNG"
                assert image.size[0] > 100
    weights = list((artifacts / "weights" / "tiny-depth2").glob("trial-*.pt"))
    assert len(weights) == 1
    assert weights[0].name == f"trial-{study.best_trial.number:06d}.pt"


def test_export_writes_best_design(tiny_space, tmp_path, capsys):
    import json

    import torch

    storage = tmp_path / "s.journal"
    artifacts = tmp_path / "artifacts"
    common = ["--storage", str(storage), "--artifact-dir", str(artifacts)]
    assert (
        main(["run", str(tiny_space), "--depths", "2", "--trials", "3", *common]) == 0
    )
    out = tmp_path / "exported"
    assert main(["export", str(tiny_space), *common, "--out", str(out)]) == 0

    best = _load(storage).best_trial
    folder = out / "tiny-depth2"
    assert (folder / "design.txt").read_text().strip() == best.user_attrs["dsl"]
    record = json.loads((folder / "trial.json").read_text())
    assert record["trial"] == best.number
    assert record["value"] == best.value
    state = torch.load(folder / "weights.pt", weights_only=True)
    assert "head.weight" in state
    assert "design, record and weights" in capsys.readouterr().out


def test_plot_writes_png(tiny_space, tmp_path):
    from PIL import Image

    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "4",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    out = tmp_path / "figures"
    assert (
        main(["plot", str(tiny_space), "--storage", str(storage), "--out", str(out)])
        == 0
    )
    with Image.open(out / "tiny-depth2.png") as image:
        assert image.format == "PNG"


def test_export_unknown_depth(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "1",
                "--epochs",
                "1",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["export", str(tiny_space), "--storage", str(storage), "--depths", "7"])
        == 6
    )
    assert "no study of space 'tiny' at depth 7; stored depths: 2" in (
        capsys.readouterr().err
    )


def test_paper_protocol_selects_on_test(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "1",
                "--protocol",
                "paper",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    study = _load(storage)
    (trial,) = study.get_trials()
    assert study.user_attrs["protocol"] == "paper"
    assert study.user_attrs["validation_size"] == 0
    assert "test accuracy" in study.user_attrs["objective"]
    assert "validation_accuracy" not in trial.user_attrs
    assert trial.user_attrs["test_accuracy"] == list(trial.intermediate_values.values())


def test_validation_protocol_labels_study(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "1",
                "--validation-size",
                "200",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    study = _load(storage)
    assert study.user_attrs["protocol"] == "validation"
    assert study.user_attrs["validation_size"] == 200
    assert "validation accuracy" in study.user_attrs["objective"]


def test_split_validation_sizes_and_disjoint():
    import torch

    from blocksearch.data import load_dataset

    data = load_dataset("synthetic")
    split = data.split_validation(100, seed=3)
    assert len(split.validation_labels) == 100
    assert len(split.train_labels) == len(data.train_labels) - 100
    assert len(split.test_labels) == len(data.test_labels)
    rows = torch.cat([split.train_images, split.validation_images])
    assert torch.unique(rows, dim=0).shape[0] == len(data.train_labels)
    again = data.split_validation(100, seed=3)
    assert torch.equal(again.validation_images, split.validation_images)


def test_split_validation_rejects_size():
    from blocksearch.data import load_dataset
    from blocksearch.errors import DataError

    with pytest.raises(DataError, match="validation size 512 does not fit the 512"):
        load_dataset("synthetic").split_validation(512, seed=0)


def test_repeats_store_every_seed_and_mean(tiny_space, tmp_path):
    storage = tmp_path / "s.journal"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                "--depths",
                "2",
                "--trials",
                "1",
                "--repeats",
                "2",
                "--storage",
                str(storage),
            ]
        )
        == 0
    )
    study = _load(storage)
    (trial,) = study.get_trials()
    runs = trial.user_attrs["runs"]
    assert [run["seed"] for run in runs] == [42, 43]
    assert all(len(run["train_loss"]) == 2 for run in runs)
    assert runs[0]["train_loss"] != runs[1]["train_loss"]
    for epoch in range(2):
        mean = (runs[0]["train_loss"][epoch] + runs[1]["train_loss"][epoch]) / 2
        assert trial.user_attrs["train_loss"][epoch] == pytest.approx(mean)
    per_seed = trial.user_attrs["objective_per_seed"]
    assert per_seed == [run["validation_accuracy"][-1] for run in runs]
    assert trial.value == pytest.approx(sum(per_seed) / 2)
    assert study.user_attrs["repeats"] == 2


PRUNE_ALL_SPACE = """
import optuna
from blocksearch import PlacementSearch, Space, TrainConfig
from blocksearch.presets import PRESETS

SPACE = Space(
    name="pruneall",
    depths=(2,),
    search=PlacementSearch(),
    presets=PRESETS,
    width=16,
    dataset="synthetic",
    validation_size=128,
    train=TrainConfig(epochs=3, batch_size=64),
    trials=5,
    # Any accuracy is below 2.0, so this pruner stops every trial it may.
    pruner=optuna.pruners.ThresholdPruner(lower=2.0),
)
"""


def test_presets_never_pruned(tmp_path):
    path = tmp_path / "pruneall.py"
    path.write_text(PRUNE_ALL_SPACE)
    storage = tmp_path / "s.journal"
    assert (
        main(["run", str(path), "--storage", str(storage), "--repeat-duplicates"]) == 0
    )
    trials = _load(storage, "pruneall-depth2").get_trials()
    presets = [t for t in trials if "preset" in t.user_attrs]
    sampled = [t for t in trials if "preset" not in t.user_attrs]
    assert len(presets) == 3
    assert all(t.state == TrialState.COMPLETE for t in presets)
    assert all(len(t.user_attrs["train_loss"]) == 3 for t in presets)
    assert len(sampled) == 2
    assert all(t.state == TrialState.PRUNED for t in sampled)
    assert all(t.user_attrs["pruned_at_epoch"] == 1 for t in sampled)


def test_given_design_trained_once_never_pruned(tmp_path):
    path = tmp_path / "pruneall.py"
    path.write_text(PRUNE_ALL_SPACE)
    storage = tmp_path / "s.journal"
    design = "linear bn tanh + id | linear bn + id -> tanh"  # not a preset
    args = ["run", str(path), "--storage", str(storage), "--trials", "4"]
    assert main([*args, "--designs", design]) == 0
    assert main([*args, "--trials", "5", "--designs", design]) == 0

    trials = _load(storage, "pruneall-depth2").get_trials()
    given = [t for t in trials if "given" in t.user_attrs]
    assert len(given) == 1
    (trial,) = given
    assert trial.number == 3  # after the three presets
    assert trial.user_attrs["given"] == trial.user_attrs["dsl"]
    assert trial.user_attrs["dsl"] != PRESETS["control"]
    assert trial.state == TrialState.COMPLETE
    assert len(trial.user_attrs["train_loss"]) == 3
    assert trials[4].state == TrialState.PRUNED  # the sampled one still is


def test_given_designs_file_with_preset_and_full_study(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    designs = tmp_path / "designs.txt"
    other = "linear bn tanh + id | linear bn + id -> tanh"
    # a byte-order mark, a comment, a preset and a region design
    designs.write_text(f"\ufeff# kept\n{PRESETS['exp2']}\n\n{other}\n")
    args = ["run", str(tiny_space), "--depths", "2", "--storage", str(storage)]
    assert main([*args, "--trials", "4", "--designs", str(designs)]) == 0
    trials = _load(storage).get_trials()
    assert [t.user_attrs.get("given") for t in trials] == [None, None, None, other]
    assert "is preset exp2" in " ".join(capsys.readouterr().err.split())

    late = canonical("linear bn + id -> tanh | linear bn tanh + id")
    assert main([*args, "--trials", "4", "--designs", late]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"without 1 given design(s) ({late})" in err
    assert "--trials 5" in err
    assert len(_load(storage).get_trials()) == 4


def test_presets_subset_then_rest_added(tiny_space, tmp_path, capsys):
    storage = tmp_path / "s.journal"
    design = canonical("linear bn tanh + id | linear bn + id -> tanh")
    args = ["run", str(tiny_space), "--depths", "2", "--storage", str(storage)]
    assert main([*args, "--trials", "1", "--presets", "none", "--designs", design]) == 0
    assert [t.user_attrs.get("given") for t in _load(storage).get_trials()] == [design]

    assert main([*args, "--trials", "2", "--presets", "exp2,exp1"]) == 0
    assert _load(storage).get_trials()[1].user_attrs["preset"] == "exp1"
    err = " ".join(capsys.readouterr().err.split())
    assert "without 1 preset(s) (exp2); run again with --trials 3" in err

    assert main([*args, "--trials", "4"]) == 0
    labels = [t.user_attrs.get("preset") for t in _load(storage).get_trials()]
    assert labels == [None, "exp1", "control", "exp2"]


def test_export_then_retrain_best_with_seeds(tiny_space, tmp_path, capsys):
    search = tmp_path / "search.journal"
    common = ["--depths", "2", "--protocol", "paper"]
    assert (
        main(
            [
                "run",
                str(tiny_space),
                *common,
                "--trials",
                "5",
                "--storage",
                str(search),
                "--repeat-duplicates",
            ]
        )
        == 0
    )
    out = tmp_path / "best"
    assert (
        main(
            [
                "export",
                str(tiny_space),
                "--storage",
                str(search),
                "--depths",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    best = _load(search).best_trial.user_attrs["dsl"]

    retrain = tmp_path / "retrain.journal"
    design_file = out / "tiny-depth2" / "design.txt"
    assert (
        main(
            [
                "run",
                str(tiny_space),
                *common,
                "--trials",
                "4",
                "--repeats",
                "2",
                "--designs",
                str(design_file),
                "--storage",
                str(retrain),
            ]
        )
        == 0
    )
    trials = _load(retrain).get_trials()
    assert [t.user_attrs.get("preset") for t in trials[:3]] == [
        "control",
        "exp1",
        "exp2",
    ]
    assert trials[3].user_attrs["given"] == best
    assert [run["seed"] for run in trials[3].user_attrs["runs"]] == [42, 43]
    capsys.readouterr()
    assert main(["show", str(tiny_space), "--storage", str(retrain)]) == 0
    assert "given #3" in capsys.readouterr().out
