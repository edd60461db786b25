"""Weight averaging and reporting in train(): the average is the ramped moving average of every
step's weights, survives an interruption exactly, and the reporter hears every step and epoch."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

from agemetric.config import RunConfig
from agemetric.estimator import AgeEstimator
from agemetric.reporting import Bar, Reporter
from agemetric.testing import random_face_arrays
from agemetric.training import Interrupted, load_checkpoint, train

CONFIG = RunConfig.from_flat(
    backbone="small_cnn",
    weights="none",
    image_size=32,
    batch_size=8,
    epochs=2,
    bf16="off",
    backbone_options={"width": 4},
    bn_recalibration=0,
    weight_average=0.9,
)
DATA = random_face_arrays(n=24, size=32)  # 3 steps per epoch


def _estimator() -> AgeEstimator:
    torch.manual_seed(0)
    return AgeEstimator.from_config(CONFIG, multitask=False)


def _floats(estimator: AgeEstimator) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in estimator.state_dict().items() if v.is_floating_point()}


def test_the_averaged_weights_are_the_ramped_moving_average_of_every_step():
    steps: list[dict[str, torch.Tensor]] = []
    plain = CONFIG.replace(weight_average=0.0)
    train(_estimator(), DATA, plain.training, on_step=lambda seconds, current: steps.append(_floats(current)))
    assert len(steps) == 6
    average = dict(steps[0])  # the first step's weights are copied
    for n, weights in enumerate(steps[1:], start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        average = {k: decay * average[k] + (1 - decay) * weights[k] for k in average}

    averaged = _estimator()
    train(averaged, DATA, CONFIG.training)
    result = _floats(averaged)
    assert result.keys() == average.keys()
    for name, value in average.items():
        torch.testing.assert_close(result[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(result[k], steps[-1][k]) for k in result)  # not simply the last weights


def test_an_interrupted_average_resumes_exactly(tmp_path):
    reference = _estimator()
    train(reference, DATA, CONFIG.training)

    interrupted, calls = _estimator(), []
    compute = interrupted.loss.compute

    def ctrl_c_on_call_4(*args):
        calls.append(1)
        if len(calls) == 4:  # epoch 2, step 1: training stops after this step
            os.kill(os.getpid(), signal.SIGINT)
        return compute(*args)

    interrupted.loss.compute = ctrl_c_on_call_4
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        train(interrupted, DATA, CONFIG.training, checkpoint=checkpoint)
    state = load_checkpoint(checkpoint)
    assert state["averaged"] is not None and state["partial"]["step"] == 1
    resumed = _estimator()
    train(resumed, DATA, CONFIG.training, checkpoint=checkpoint, resume=state)
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


class _Recorder(Reporter):
    def __init__(self):
        self.bars: list[_RecordedBar] = []

    def bar(self, label, total, completed=0):
        self.bars.append(_RecordedBar(label, total, completed))
        return self.bars[-1]


@dataclasses.dataclass
class _RecordedBar(Bar):
    label: str
    total: int
    completed: int
    labels: list = dataclasses.field(default_factory=list)
    lines: list = dataclasses.field(default_factory=list)

    def advance(self, n=1, label=None, status=None):
        self.completed += n
        self.labels.append((label, status))

    def line(self, text):
        self.lines.append(text)


def test_the_reporter_hears_every_step_and_every_epoch():
    recorder = _Recorder()
    history = train(_estimator(), DATA, CONFIG.replace(weight_average=0.0).training, recorder)
    (bar,) = recorder.bars
    assert (bar.label, bar.total, bar.completed) == ("train", 48, 48)
    assert [label for label, _ in bar.labels] == [None] * 6  # the bar stays "train": it counts the run's images
    assert [status.split(",")[0] for _, status in bar.labels] == ["epoch 1/2"] * 3 + ["epoch 2/2"] * 3
    assert all(", loss " in status and status.endswith(" img/s") for _, status in bar.labels)
    assert [line.split(":")[0] for line in bar.lines] == ["epoch 1/2", "epoch 2/2"]
    assert bar.lines[1].startswith(f"epoch 2/2: loss {history[1]['loss']:.3f}, ")
