"""Training: the loop (`train()`), its state and checkpoint, the optimiser and schedule.

- `loop`: `train()`, and the errors it stops with (`Interrupted`, `TrainingDiverged`).
- `step`: `TrainStep`, the multi-task loss of one batch (what DDP wraps).
- `sampling`: an epoch's batches, shuffled or balanced over ages and groups.
- `state`: `TrainState`, `EpochProgress`, `RandomStreams`, the checkpoint format (`load_checkpoint()`).
- `optim`: parameter groups, the optimiser, the learning-rate schedule, weight averaging.
- `batchnorm`: BatchNorm statistics recomputed for the final weights.
"""

from agemetric.training.batchnorm import recalibrate_batchnorm
from agemetric.training.loop import Interrupted, TrainingDiverged, train
from agemetric.training.optim import lr_factor, make_optimizer, parameter_groups, weight_averager
from agemetric.training.sampling import balance_weights, batches
from agemetric.training.state import (
    TRAINING_STATE_FORMAT,
    EpochProgress,
    RandomStreams,
    TrainState,
    load_checkpoint,
)
from agemetric.training.step import TrainStep

__all__ = [
    "TRAINING_STATE_FORMAT",
    "EpochProgress",
    "Interrupted",
    "RandomStreams",
    "TrainState",
    "TrainStep",
    "TrainingDiverged",
    "balance_weights",
    "batches",
    "load_checkpoint",
    "lr_factor",
    "make_optimizer",
    "parameter_groups",
    "recalibrate_batchnorm",
    "train",
    "weight_averager",
]
