"""The optimiser, its parameter groups and schedule, and the moving average of the weights."""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel

from agemetric.estimator import AgeEstimator
from agemetric.settings import TrainingSettings


def parameter_groups(estimator: AgeEstimator, settings: TrainingSettings) -> list[dict]:
    """The trunk at ``settings.lr``; the embedding heads and loss parameters at ``settings.head_lr``
    (one group when it is unset)."""
    if settings.head_lr is None:
        return [{"params": list(estimator.parameters())}]
    heads = getattr(estimator.backbone, "heads", None)
    new = {id(p) for p in (heads.parameters() if heads is not None else ())}
    new |= {id(p) for name, p in estimator.named_parameters() if name.startswith(("loss.", "gender_loss."))}
    params = list(estimator.parameters())
    return [
        {"params": [p for p in params if id(p) not in new]},
        {"params": [p for p in params if id(p) in new], "lr": settings.head_lr},
    ]


def lr_factor(progress: float, settings: TrainingSettings) -> float:
    """The learning-rate multiplier at ``progress`` (0 at the start of training, 1 at its end):
    linear warm-up over ``settings.warmup``, then constant or a cosine decay to 0."""
    if progress < settings.warmup:
        return max(progress / settings.warmup, 1e-3)
    if settings.lr_schedule == "constant":
        return 1.0
    rest = (progress - settings.warmup) / (1.0 - settings.warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))


def make_optimizer(params, settings: TrainingSettings) -> torch.optim.Optimizer:
    """Adadelta (the paper's), Adam or SGD with momentum 0.9; ``params`` may be parameter groups."""
    if settings.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(params, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)


def weight_averager(estimator: AgeEstimator, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``estimator``'s weights and BatchNorm statistics
    (``torch.optim.swa_utils.AveragedModel``), its decay ramped up as ``(1 + n) / (10 + n)`` so that
    the first steps' weights fade fast; ``None`` when ``decay`` is 0."""
    if not decay:
        return None

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged + (current - averaged) * (1.0 - d)

    return AveragedModel(estimator, avg_fn=average, use_buffers=True)
