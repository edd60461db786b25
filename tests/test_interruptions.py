"""Numerical guards and interruptions inside train(): a NaN loss keeps the last good checkpoint;
Ctrl-C in the middle of an epoch checkpoints that step, and resuming from it is exact."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from agemetric.config import RunConfig
from agemetric.estimator import AgeEstimator
from agemetric.testing import random_face_arrays
from agemetric.training import Interrupted, TrainingDiverged, load_checkpoint, train

CONFIG = RunConfig.from_flat(
    backbone="small_cnn",
    weights="none",
    image_size=32,
    batch_size=8,
    epochs=3,
    bf16="off",
    backbone_options={"width": 4},
    bn_recalibration=0,
)


def _estimator(on_call=None, when: int = 0) -> AgeEstimator:
    """A small estimator whose loss calls ``on_call(output)`` on its ``when``-th call."""
    torch.manual_seed(0)
    estimator = AgeEstimator.from_config(CONFIG, multitask=False)
    compute, calls = estimator.loss.compute, []

    def counted(*args):
        calls.append(1)
        out = compute(*args)
        return on_call(out) if len(calls) == when else out

    estimator.loss.compute = counted
    return estimator


def test_ctrl_c_mid_epoch_checkpoints_that_step_and_resume_is_exact(tmp_path):
    data = random_face_arrays(n=24, size=32)  # 3 steps per epoch
    reference = _estimator()
    train(reference, data, CONFIG.training)

    def ctrl_c(out):
        os.kill(os.getpid(), signal.SIGINT)  # handled: training stops after this step
        return out

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted, match="interrupted in epoch 2, step 3; checkpoint saved"):
        train(_estimator(ctrl_c, when=5), data, CONFIG.training, checkpoint=checkpoint)  # call 5: epoch 2, step 2
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 2 and state["partial"]["step"] == 2 and len(state["history"]) == 1
    resumed = _estimator()
    history = train(resumed, data, CONFIG.training, checkpoint=checkpoint, resume=state)
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[1]["images"] == 24
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    estimator = _estimator(lambda out: out * float("nan"), when=5)
    data = random_face_arrays(n=24, size=32)  # 3 steps per epoch: the 5th is epoch 2, step 2
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2: loss is nan; .*the checkpoint of epoch 1 is kept"):
        train(estimator, data, CONFIG.training, checkpoint=checkpoint)
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == 2 and state["partial"] is None and len(state["history"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
