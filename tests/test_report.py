"""Rank correlation used by the theory check."""

from __future__ import annotations

import math

import pytest

from blocksearch.report import checkpoint_epochs, rank_correlation


def test_rank_correlation_monotone():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_rank_correlation_ties_averaged():
    # ranks x: 1.5 1.5 3 4, y: 1 2 3 4 -> Pearson of ranks
    rho = rank_correlation([5, 5, 7, 9], [1, 2, 3, 4])
    assert rho == pytest.approx(0.9486832980505138)


def test_rank_correlation_undefined_cases():
    assert math.isnan(rank_correlation([1, 2], [1, 2]))
    assert math.isnan(rank_correlation([3, 3, 3], [1, 2, 3]))


def test_rank_correlation_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="got 2 and 3 values"):
        rank_correlation([1, 2], [1, 2, 3])


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [(2, [2]), (10, [10]), (25, [10, 20, 25]), (50, [10, 20, 30, 50])],
)
def test_checkpoint_epochs(epochs, expected):
    assert checkpoint_epochs(epochs) == expected
