"""Balanced sampling (the ``balance`` setting): each image's chance against a brute-force count of
its cell, the draws' shares, and a run that trains with it."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agemetric.config import RunConfig, resolve
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.testing import random_face_arrays
from agemetric.training import balance_weights, batches, train


def _arrays(ages: list[float], races: list[str | None] | None = None):
    data = random_face_arrays(n=len(ages), size=8)
    data.ages = torch.tensor(ages, dtype=torch.float32)
    data.groups = None if races is None else {"race": races}
    return data


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100, allow_nan=False), st.sampled_from(["a", "b", None])), min_size=1, max_size=40)
)
def test_each_chance_is_one_over_the_root_of_its_cell(rows):
    ages, races = [a for a, _ in rows], [r for _, r in rows]
    data = _arrays(ages, races)
    ages = data.ages.tolist()  # as stored (float32: 99.99999999999999 is 100.0, in the next 5-year cell)
    for balance, key in (
        ("ages", lambda i: int(ages[i] // 5)),
        ("ages+groups", lambda i: (int(ages[i] // 5), races[i])),
    ):
        weights = balance_weights(data, balance)
        for i in range(len(ages)):
            count = sum(key(j) == key(i) for j in range(len(ages)))
            assert weights[i].item() == pytest.approx(1 / math.sqrt(count), rel=1e-6)
    assert balance_weights(data, "off") is None


def test_without_group_labels_ages_and_groups_balances_ages():
    data = _arrays([20, 21, 60])
    assert torch.equal(balance_weights(data, "ages+groups"), balance_weights(data, "ages"))


def test_a_rare_age_band_is_drawn_in_proportion_to_the_root_of_its_size():
    data = _arrays([20.0] * 90 + [60.0] * 10)
    weights, generator = balance_weights(data, "ages"), torch.Generator().manual_seed(0)
    drawn = torch.cat([torch.cat(batches(100, 10, generator, weights=weights)) for _ in range(200)])
    assert drawn.numel() == 20_000  # an epoch draws as many images as the split holds
    share = (drawn >= 90).float().mean().item()
    expected = math.sqrt(10) / (math.sqrt(90) + math.sqrt(10))  # 0.25, against 0.10 unbalanced
    assert share == pytest.approx(expected, abs=0.015)


def test_a_balanced_run_trains_its_epochs():
    config = RunConfig.from_flat(
        backbone="small_cnn", weights="none", image_size=32, batch_size=8, epochs=2, bf16="off"
    )
    config = config.replace(backbone_options={"width": 4}, bn_recalibration=0, balance="ages")
    torch.manual_seed(0)
    history = train(
        AgeEstimator.from_config(config, multitask=False), random_face_arrays(n=24, size=32), config.training
    )
    assert [row["images"] for row in history] == [24, 24]
    assert all(math.isfinite(row["loss"]) for row in history)


def test_balance_is_a_setting_with_three_choices():
    assert resolve(sets=["balance=ages+groups"]).training.balance == "ages+groups"
    with pytest.raises(AgemetricError, match="balance must be one of off, ages, ages\\+groups, got 'age'"):
        RunConfig().replace(balance="age")
