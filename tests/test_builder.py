"""Compiled presets against hand-written PyTorch modules of the same variants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from blocksearch.builder import ResidualMLP, build_block
from blocksearch.errors import DslError
from blocksearch.presets import PRESETS

WIDTH = 16


class HandBlock(nn.Module):
    """A block of the reference experiment written out by hand."""

    def __init__(self, variant: str, width: int) -> None:
        super().__init__()
        self.variant = variant
        self.fc1 = nn.Linear(width, width)
        self.bn1 = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, width)
        self.bn2 = nn.BatchNorm1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.tanh
        if self.variant == "control":
            h = act(self.bn1(self.fc1(x)) + x)
            return act(self.bn2(self.fc2(h)) + h)
        if self.variant == "exp1":
            h = self.bn1(self.fc1(x)) + act(x)
            return self.bn2(self.fc2(h)) + act(h)
        if self.variant == "exp2":
            h = act(self.bn1(self.fc1(x)) + x)
            return self.bn2(self.fc2(h)) + act(h)
        raise ValueError(self.variant)


class HandNetwork(nn.Module):
    def __init__(self, variant: str, depth: int, width: int, inputs: int, classes: int):
        super().__init__()
        self.fc_in = nn.Linear(inputs, width)
        self.bn_in = nn.BatchNorm1d(width)
        self.blocks = nn.ModuleList(HandBlock(variant, width) for _ in range(depth))
        self.fc_out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn_in(self.fc_in(x)))
        for block in self.blocks:
            h = block(h)
        return self.fc_out(h)


def _copy_block(hand: HandBlock, compiled) -> None:
    """Copy the hand-written block's weights into the compiled block."""
    first, second = compiled.stages
    pairs = [
        (hand.fc1, first.main[0]),
        (hand.bn1, first.main[1]),
        (hand.fc2, second.main[0]),
        (hand.bn2, second.main[1]),
    ]
    for source, target in pairs:
        target.load_state_dict(source.state_dict())


def _randomize(module: nn.Module) -> None:
    """Give BatchNorm non-trivial affine weights so a swap of layers shows."""
    generator = torch.Generator().manual_seed(1)
    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm1d):
            dtype = sub.weight.dtype
            weight = torch.rand(sub.num_features, generator=generator) + 0.5
            sub.weight.data = weight.to(dtype)
            sub.bias.data = torch.randn(sub.num_features, generator=generator).to(dtype)


@pytest.mark.parametrize("variant", ["control", "exp1", "exp2"])
def test_compiled_block_matches_hand_written(variant):
    torch.manual_seed(0)
    hand = HandBlock(variant, WIDTH).double()
    _randomize(hand)
    compiled = build_block(PRESETS[variant], WIDTH).double()
    _copy_block(hand, compiled)
    x = torch.randn(32, WIDTH, dtype=torch.float64)
    x_hand = x.clone().requires_grad_()
    x_compiled = x.clone().requires_grad_()

    out_hand = hand(x_hand)
    out_compiled = compiled(x_compiled)
    weights = torch.randn_like(out_hand)
    (out_hand * weights).sum().backward()
    (out_compiled * weights).sum().backward()

    torch.testing.assert_close(out_compiled, out_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(x_compiled.grad, x_hand.grad, rtol=0, atol=1e-12)
    first, second = compiled.stages
    torch.testing.assert_close(first.main[0].weight.grad, hand.fc1.weight.grad)
    torch.testing.assert_close(first.main[1].weight.grad, hand.bn1.weight.grad)
    torch.testing.assert_close(second.main[0].bias.grad, hand.fc2.bias.grad)
    torch.testing.assert_close(second.main[1].bias.grad, hand.bn2.bias.grad)
    # BatchNorm in train mode updated the same running statistics
    torch.testing.assert_close(first.main[1].running_mean, hand.bn1.running_mean)


@pytest.mark.parametrize("variant", ["control", "exp1", "exp2"])
def test_variants_differ_from_each_other(variant):
    # Guards the test above: a wrong preset would match a different variant.
    torch.manual_seed(0)
    compiled = build_block(PRESETS[variant], WIDTH).double()
    x = torch.randn(32, WIDTH, dtype=torch.float64)
    for other in {"control", "exp1", "exp2"} - {variant}:
        hand = HandBlock(other, WIDTH).double()
        _randomize(hand)
        _copy_block(hand, compiled)
        assert not torch.allclose(compiled(x), hand(x))


@pytest.mark.parametrize("variant", ["control", "exp1", "exp2"])
def test_network_matches_hand_written(variant):
    torch.manual_seed(0)
    depth, inputs, classes = 3, 24, 5
    hand = HandNetwork(variant, depth, WIDTH, inputs, classes).double()
    _randomize(hand)
    compiled = ResidualMLP(
        PRESETS[variant],
        depth=depth,
        width=WIDTH,
        in_features=inputs,
        num_classes=classes,
    ).double()
    compiled.stem[0].load_state_dict(hand.fc_in.state_dict())
    compiled.stem[1].load_state_dict(hand.bn_in.state_dict())
    compiled.head.load_state_dict(hand.fc_out.state_dict())
    for hand_block, block in zip(hand.blocks, compiled.blocks, strict=True):
        _copy_block(hand_block, block)

    x = torch.randn(20, inputs, dtype=torch.float64)
    out_hand, out_compiled = hand(x), compiled(x)
    out_hand.square().sum().backward()
    out_compiled.square().sum().backward()

    torch.testing.assert_close(out_compiled, out_hand, rtol=0, atol=1e-12)
    torch.testing.assert_close(compiled.stem[0].weight.grad, hand.fc_in.weight.grad)
    torch.testing.assert_close(
        compiled.blocks[0].stages[0].main[0].weight.grad,
        hand.blocks[0].fc1.weight.grad,
    )
    torch.testing.assert_close(compiled.head.weight.grad, hand.fc_out.weight.grad)


def test_network_layer_counts_match_reference():
    depth = 20
    model = ResidualMLP(PRESETS["control"], depth=depth, width=WIDTH, in_features=30)
    modules = list(model.modules())
    assert sum(isinstance(m, nn.Linear) for m in modules) == 2 * depth + 2
    assert sum(isinstance(m, nn.BatchNorm1d) for m in modules) == 2 * depth + 1
    assert sum(isinstance(m, nn.Tanh) for m in modules) == 2 * depth + 1


def test_network_print_collapses_repeated_blocks():
    text = repr(ResidualMLP(PRESETS["exp2"], depth=20, width=WIDTH, in_features=30))
    assert "(0-19): 20 x ResidualBlock(" in text
    assert "'linear bn + id -> tanh | linear bn + tanh', width=16" in text
    assert text.count("ResidualBlock(") == 1


def test_network_per_block_designs():
    designs = [PRESETS["exp1"]] * 2 + [PRESETS["control"]] * 3
    model = ResidualMLP(designs, depth=5, width=WIDTH, in_features=30)
    text = repr(model)
    assert (
        "(0-1): 2 x ResidualBlock(\n      'linear bn + tanh | linear bn + tanh'" in text
    )
    assert "(2-4): 3 x ResidualBlock(" in text
    assert model(torch.randn(4, 30)).shape == (4, 10)


def test_network_rejects_wrong_design_count():
    with pytest.raises(ValueError, match="got 2 block designs for depth 3"):
        ResidualMLP([PRESETS["exp1"]] * 2, depth=3, width=WIDTH)


def test_network_rejects_zero_depth():
    with pytest.raises(ValueError, match="depth must be a positive integer, got 0"):
        ResidualMLP(PRESETS["exp1"], depth=0)


def test_build_block_reports_dsl_errors():
    with pytest.raises(DslError, match="unknown op 'tahn'"):
        build_block("linear bn + tahn", WIDTH)


def test_block_with_arguments_builds():
    block = build_block("linear dropout(0.5) + scale(0.25) -> leaky_relu(0.2)", WIDTH)
    block.eval()
    x = torch.randn(4, WIDTH)
    main = block.stages[0].main(x)
    expected = nn.functional.leaky_relu(main + 0.25 * x, 0.2)
    torch.testing.assert_close(block(x), expected)


_op_names = st.sampled_from(["linear", "bn", "ln", "tanh", "relu", "gelu", "id"])
_path = st.lists(_op_names, min_size=1, max_size=3).map(" ".join)
_stage = st.tuples(_path, _path, st.one_of(st.none(), _path)).map(
    lambda p: f"{p[0]} + {p[1]}" + (f" -> {p[2]}" if p[2] else "")
)
_block = st.lists(_stage, min_size=1, max_size=3).map(" | ".join)


@settings(max_examples=30, deadline=None)
@given(_block, st.integers(1, 4))
def test_random_designs_build_and_keep_width(text, depth):
    model = ResidualMLP(text, depth=depth, width=WIDTH, in_features=6, num_classes=3)
    model.eval()
    h = model.stem(torch.randn(5, 6))
    for block in model.blocks:
        h = block(h)
        assert h.shape == (5, WIDTH)
    assert model(torch.randn(5, 6)).shape == (5, 3)
