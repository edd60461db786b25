"""The loss a training step minimises: the paper's multi-task loss over one prepared batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from agemetric.estimator import AgeEstimator


class TrainStep(nn.Module):
    """An estimator's training loss as one module, so that DDP can wrap it (its parameters: the
    backbone's and the losses'): the age task's loss over the pairs its miner chooses, plus, with
    the gender task, the gender loss over the faces whose gender is known.

    Examples:
        >>> import agemetric
        >>> from agemetric.testing import random_face_arrays
        >>> est = agemetric.AgeEstimator.from_config(agemetric.resolve("quick", sets=["image_size=32"]))
        >>> faces = random_face_arrays(24, size=32)
        >>> sorted(TrainStep(est)(est.prepare(faces.images), faces.ages, faces.genders))
        ['age', 'loss']
    """

    def __init__(self, estimator: AgeEstimator):
        super().__init__()
        self.estimator = estimator

    def forward(
        self,
        x: torch.Tensor,
        ages: torch.Tensor,
        genders: torch.Tensor,
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The multi-task loss of one prepared batch.

        Args:
            x: ``(B, 3, S, S)`` float, from `AgeEstimator.prepare()` (and augmentation).
            ages: ``(B,)`` float.
            genders: ``(B,)`` int64, -1 unknown (those rows sit out the gender task).
            gather: in data-parallel training, joins every process's rows of a tensor into the
                global batch (`agemetric.distributed.gather()`), so that the miner sees the pairs
                of the global batch; ``None`` on one process.

        Returns:
            ``{"loss": total, "age": ..., "gender": ...}`` 0-d tensors (``gender`` only when on).
        """
        est = self.estimator
        ages, genders = ages.to(x.device), genders.to(x.device)
        with est.autocast():
            emb = est.backbone(x)
        if gather is not None:
            emb = type(emb)(*(None if t is None else gather(t) for t in emb))
            ages, genders = gather(ages), gather(genders)
        age_emb = emb.age.float()  # (B, N_a); the loss runs in float32
        age_loss = est.loss(age_emb, ages, est.miner(age_emb, ages))
        out = {"loss": age_loss, "age": age_loss.detach()}
        if est.gender_loss is not None:
            known = genders >= 0  # (B,)
            g_emb, g = emb.gender.float()[known], genders[known]  # (B', N_g), (B',)
            g_loss = est.gender_loss(g_emb, g.float(), est.gender_miner(g_emb, g.float()))
            out["loss"] = age_loss + g_loss
            out["gender"] = g_loss.detach()
        return out
