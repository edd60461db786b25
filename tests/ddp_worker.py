"""Run by tests/test_distributed.py, once alone and once under ``torchrun --nproc_per_node 2``.

Builds the same small model in every process (no BatchNorm and no dropout, so one process and
two compute the same thing; a scaled loss gives it a parameter after the all-gather), then
(1) one step on a fixed global batch: the loss and every gradient, and (2) three epochs of
:func:`agemetric.training.train`: the final parameters. Rank 0 saves both to ``argv[1]``.
Training uses SGD: the heads' biases have an exact gradient of 0 (L1 distances ignore a shift of
every embedding), and Adam would turn the float noise there into full-size steps.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from agemetric import distributed, plugins
from agemetric.backbones import TrunkBackbone
from agemetric.config import RunConfig
from agemetric.default_plugins.revised_contrastive import RevisedContrastiveLoss
from agemetric.estimator import AgeEstimator
from agemetric.spec import ModelSpec
from agemetric.testing import random_face_arrays
from agemetric.training import TrainStep, train


class PlainCNN(TrunkBackbone):
    """Conv -> ReLU -> pool -> heads: per-image maths only (BatchNorm would mix a process's rows)."""

    min_size = 8

    def __init__(self, embedding_dim: int = 6, gender_dim: int = 3, weights=None):
        trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        super().__init__(trunk, 32, embedding_dim, gender_dim, weights, dropout=0.0)


class ScaledLoss(RevisedContrastiveLoss):
    """Revised contrastive on ``scale * embeddings``: a trained parameter after the gather."""

    def __init__(self, margin: float = 4.0):
        super().__init__(margin)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def compute(self, embeddings, labels, indices):
        return super().compute(embeddings * self.scale, labels, indices)


def build(config: RunConfig) -> AgeEstimator:
    torch.manual_seed(0)
    return AgeEstimator(
        PlainCNN(),
        plugins.create("miner", "all-pairs"),
        ScaledLoss(margin=4.0),
        plugins.create("retriever", "l1-knn", k=3),
        gender_loss=ScaledLoss(margin=0.5),
        image_size=16,
        spec=ModelSpec.from_config(config, multitask=True),
    )


def main(out: str) -> None:
    world = distributed.init_from_env("cpu")  # gloo, also on a machine with a GPU
    config = RunConfig.from_flat(
        image_size=16,
        batch_size=10,
        epochs=3,
        optimizer="sgd",
        lr=1e-3,
        augment=False,
        bf16="off",
        channels_last=False,
        bn_recalibration=0,
        seed=3,
        device="cpu",
    )
    data = random_face_arrays(n=25, size=16, seed=1)  # 25 = 2 batches of 10 + a last one of 5, shared 3 + 2
    data.genders[::4] = -1  # unknown genders sit out the gender task, across both processes

    estimator = build(config)
    step = distributed.wrap(TrainStep(estimator), world)
    index = torch.arange(10)
    mine, sizes = world.share(index)
    gather = (lambda t: distributed.gather(t, sizes, world)) if world.active else None
    x = estimator.prepare(data.images[mine])
    parts = step(x, data.ages[mine], data.genders[mine], gather)
    parts["loss"].backward()
    grads = {name: p.grad.clone() for name, p in estimator.named_parameters()}

    estimator = build(config)
    history = train(estimator, data, config.training, world=world, seed=config.seed)
    if world.is_main:
        torch.save(
            {
                "loss": {k: v.detach() for k, v in parts.items()},
                "grads": grads,
                "params": {k: v.detach().clone() for k, v in estimator.state_dict().items()},
                "history": history,
            },
            out,
        )
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
