"""Numerical guards: a NaN loss stops training with a message and keeps the last good checkpoint."""

from __future__ import annotations

import pytest
import torch

from agemetric.config import RunConfig
from agemetric.estimator import AgeEstimator
from agemetric.testing import random_face_arrays
from agemetric.training import TrainingDiverged, load_checkpoint, train


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    config = RunConfig(
        backbone="small_cnn", weights="none", image_size=32, batch_size=8, epochs=3, bf16="off",
        backbone_options={"width": 4}, bn_recalibration=0,
    )  # fmt: skip
    torch.manual_seed(0)
    estimator = AgeEstimator.from_config(config, multitask=False)
    compute, calls = estimator.loss.compute, []

    def nan_on_the_fifth_call(*args):
        calls.append(1)
        out = compute(*args)
        return out * float("nan") if len(calls) == 5 else out

    estimator.loss.compute = nan_on_the_fifth_call
    data = random_face_arrays(n=24, size=32)  # 3 steps per epoch: the 5th is epoch 2, step 2
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: loss is nan; .*the checkpoint of epoch 1 is kept"):
        train(estimator, data, config, checkpoint=checkpoint)
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 2 and state["partial"] is None and len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
