"""Plug-in ops: registered in code or through an entry point, usable everywhere."""

from __future__ import annotations

import importlib
import logging
import sys

import optuna
import pytest
import torch
from torch import nn

from blocksearch import ops
from blocksearch.analysis import analyse
from blocksearch.builder import build_block
from blocksearch.data import load_dataset
from blocksearch.dsl import canonical
from blocksearch.errors import DslError
from blocksearch.space import Space
from blocksearch.study import open_storage, run_space
from blocksearch.train import TrainConfig


class LearnedGate(nn.Module):
    """Skip scale ``sigmoid(g) * x`` with one learned gate per feature."""

    def __init__(self, width: int, initial: float) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.full((width,), initial))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate) * x


@pytest.fixture
def plugin_ops():
    ops.register_op(
        "softsign_test", lambda width: nn.Softsign(), kind=ops.OpKind.ACTIVATION
    )
    ops.register_op(
        "gate_test",
        LearnedGate,
        kind=ops.OpKind.OTHER,
        params=(ops.Param("initial", float, 0.0),),
    )
    yield
    ops.unregister_op("softsign_test")
    ops.unregister_op("gate_test")


def test_plugin_op_parses_and_prints(plugin_ops):
    text = "linear bn + gate_test(initial=2) -> softsign_test"
    assert canonical(text) == "linear bn + gate_test(2.0) -> softsign_test"
    assert canonical("linear + gate_test(0.0)") == "linear + gate_test"


def test_plugin_op_builds(plugin_ops):
    block = build_block("linear bn + gate_test(1.0) -> softsign_test", 6)
    gate = block.stages[0].skip[0]
    assert isinstance(gate, LearnedGate)
    assert gate.gate.shape == (6,)
    assert block(torch.randn(4, 6)).shape == (4, 6)


def test_plugin_activation_counts_in_analysis(plugin_ops):
    stats = analyse("linear + softsign_test", 3)
    assert stats.activations.mean == 1.5
    assert stats.skip_chain_activations == 3


def test_plugin_integer_argument_type(plugin_ops):
    ops.register_op(
        "repeat_test",
        lambda width, times: nn.Identity(),
        kind=ops.OpKind.OTHER,
        params=(ops.Param("times", int),),
    )
    try:
        assert canonical("repeat_test(3) + id") == "repeat_test(3) + id"
        with pytest.raises(
            DslError,
            match="argument 'times' of op 'repeat_test' must be an integer, got '1.5'",
        ):
            canonical("repeat_test(1.5) + id")
    finally:
        ops.unregister_op("repeat_test")


def test_plugin_argument_checked(plugin_ops):
    with pytest.raises(DslError, match="op 'gate_test' has no argument 'scale'"):
        canonical("linear + gate_test(scale=1.0)")


class _FixedSearch:
    """Search that always proposes one design with plug-in ops."""

    def suggest(self, trial: optuna.Trial) -> str:
        trial.suggest_categorical("design", ["plugin"])
        return "linear bn + gate_test -> softsign_test"

    def params_for(self, design: str) -> dict[str, str]:
        return {"design": "plugin"}


def test_plugin_op_runs_in_study(plugin_ops, tmp_path):
    space = Space(
        name="plugin",
        depths=(2,),
        search=_FixedSearch(),
        width=8,
        dataset="synthetic",
        validation_size=128,
        train=TrainConfig(epochs=1, batch_size=64),
        trials=1,
    )
    storage = open_storage(tmp_path / "plugin.journal")
    (study,) = run_space(space, load_dataset("synthetic"), storage=storage)
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["dsl"] == "linear bn + gate_test -> softsign_test"
    assert trial.user_attrs["path_stats"]["activations"]["mean"] == 2.0


def _install_fake_distribution(root, module_body: str, entry: str) -> None:
    (root / "fake_blocksearch_plugin.py").write_text(module_body)
    info = root / "fake_blocksearch_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-blocksearch-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[blocksearch.ops]\n{entry}\n")


@pytest.fixture
def fresh_plugins(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_blocksearch_plugin", raising=False)
    monkeypatch.setattr(ops, "_plugins_loaded", False)
    importlib.invalidate_caches()
    yield tmp_path
    ops.unregister_op("hardshrink_plugin")


def test_entry_point_registers_ops(fresh_plugins):
    _install_fake_distribution(
        fresh_plugins,
        "from torch import nn\n"
        "from blocksearch import OpKind, register_op\n"
        "def register():\n"
        "    register_op('hardshrink_plugin', lambda width: nn.Hardshrink(),\n"
        "                kind=OpKind.ACTIVATION)\n",
        "hardshrink = fake_blocksearch_plugin:register",
    )
    assert canonical("linear + hardshrink_plugin") == "linear + hardshrink_plugin"
    assert ops.get_op("hardshrink_plugin").kind is ops.OpKind.ACTIVATION


def test_broken_entry_point_is_logged(fresh_plugins, caplog):
    _install_fake_distribution(
        fresh_plugins,
        "def register():\n    raise RuntimeError('plug-in is broken')\n",
        "broken = fake_blocksearch_plugin:register",
    )
    # The command line stops "blocksearch" logs from reaching the root logger,
    # so the capture handler is attached to the module's logger itself.
    logger = logging.getLogger("blocksearch.ops")
    logger.addHandler(caplog.handler)
    try:
        assert "linear" in ops.op_names()
    finally:
        logger.removeHandler(caplog.handler)
    assert "skipped plug-in ops 'broken'" in caplog.text
    assert "plug-in is broken" in caplog.text
