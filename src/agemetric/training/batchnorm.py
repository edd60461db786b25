"""BatchNorm statistics recomputed for the final weights ("precise BN")."""

from __future__ import annotations

import torch

from agemetric.data.arrays import FaceArrays
from agemetric.estimator import AgeEstimator
from agemetric.training.sampling import batches


@torch.no_grad()
def recalibrate_batchnorm(
    estimator: AgeEstimator, data: FaceArrays, n_batches: int, batch_size: int, generator: torch.Generator
) -> None:
    """Recompute every BatchNorm's running statistics for the final weights ("precise BN").

    During training the running averages trail the weights; after a short or fast-moving run
    they no longer match, and eval-mode outputs drift (measured: a regression head fine-tuned
    for 45 s predicted 25.5 years MAE in eval mode against 13.0 with batch statistics). Here
    the statistics are reset and averaged (cumulatively) over ``n_batches`` un-augmented
    training batches in train mode, without gradients.
    """
    norms = [m for m in estimator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    estimator.train()
    try:
        for index in batches(len(data), batch_size, generator)[:n_batches]:
            with estimator.autocast():
                estimator.backbone(estimator.prepare(data.images[index]))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
