"""One plain, readable training loop (no framework): `train()`."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from agemetric import distributed
from agemetric._io import atomic_torch_save
from agemetric._text import printable
from agemetric.data.arrays import FaceArrays
from agemetric.data.transforms import augment
from agemetric.errors import AgemetricError
from agemetric.estimator import AgeEstimator
from agemetric.reporting import SILENT, Reporter
from agemetric.settings import TrainingSettings
from agemetric.training.batchnorm import recalibrate_batchnorm
from agemetric.training.optim import lr_factor, make_optimizer, parameter_groups, weight_averager
from agemetric.training.sampling import balance_weights, batches
from agemetric.training.state import (
    TRAINING_STATE_FORMAT,
    EpochProgress,
    RandomStreams,
    TrainState,
    check_fits,
)
from agemetric.training.step import TrainStep


class TrainingDiverged(AgemetricError):
    """The loss became NaN or infinite."""

    exit_code = 1


class Interrupted(AgemetricError):
    """Ctrl-C (SIGINT, exit code 130) or SIGTERM (exit code 143, as a process ended by that signal
    reports it) stopped training between two steps; the checkpoint holds the state."""

    exit_code = 130

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum


class _Training:
    """The state and the parts of one `train()` call; `run()` is the loop."""

    def __init__(self, estimator, data, settings, seed, reporter, world, checkpoint, resume, on_step, extra):
        self.estimator, self.data, self.settings = estimator, data, settings
        self.reporter, self.world, self.on_step, self.extra = reporter, world, on_step, extra
        self.streams = RandomStreams(seed, world)
        self.smallest = 2 * world.size  # every process needs two images of each batch
        self.weights = balance_weights(data, settings.balance)
        if estimator.channels_last:  # the backbone only: a memory format concerns 4-d tensors (conv weights)
            estimator.backbone.to(memory_format=torch.channels_last)
        estimator.train()
        if world.active or resume is not None or settings.weight_average:  # lazy parameters must exist
            # before DDP, a state load or a copy for the average
            _materialise_lazy(estimator, data, self.smallest)
        self.step_module = distributed.wrap(TrainStep(estimator), world)
        self.optimizer = make_optimizer(parameter_groups(estimator, settings), settings)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.averaged = weight_averager(estimator, settings.weight_average)
        self.state = TrainState()
        if resume is not None:
            self._restore(resume, checkpoint or "the checkpoint")
        self.checkpoint = checkpoint if world.is_main else None
        self.began = time.perf_counter() - self.state.elapsed

    # -- the clock: seconds of training, less what on_step spent itself ---------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    # -- checkpoints -------------------------------------------------------------------------
    def _restore(self, saved: dict, source: Path | str) -> None:
        """Continue from ``saved`` (read by `load_checkpoint()` from ``source``, whose fields it
        checked); weights, optimiser state or batches that do not fit this run are one-line errors."""
        if saved.get("images") not in (None, len(self.data)):
            raise AgemetricError(
                f"resume: the training split now has {len(self.data)} readable images, the checkpoint was "
                f"written with {saved['images']} (an image became unreadable or was replaced); it cannot be continued"
            )
        try:
            self.estimator.load_state_dict(saved["model"])
            if self.averaged is not None and saved.get("averaged") is not None:
                self.averaged.load_state_dict(saved["averaged"])
        except RuntimeError as exc:
            raise AgemetricError(
                f"resume: {source}: its weights do not fit this run's model ({_detail(exc)})"
            ) from None
        check_fits(saved, self.optimizer, len(self.data), source)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.streams.restore(saved["rng"])
        partial = saved["partial"]
        self.state = TrainState(
            epoch=saved["epoch"],
            partial=None if partial is None else EpochProgress(**partial),
            history=list(saved["history"]),
            elapsed=saved["elapsed"],
        )

    def save(self, epoch: int, partial: EpochProgress | None) -> None:
        """Write the checkpoint (rank 0, when there is one): training continues from ``epoch``."""
        if self.checkpoint is None:
            return
        saved = {
            "format": TRAINING_STATE_FORMAT,
            "epoch": epoch,
            "partial": None if partial is None else dataclasses.asdict(partial),
            "history": self.state.history,
            "elapsed": self.elapsed(),
            "model": self.estimator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
            "images": len(self.data),  # and with another training split
            "rng": self.streams.state(),
            "extra": self.extra,
        }
        atomic_torch_save(saved, self.checkpoint)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> list[dict]:
        settings, state = self.settings, self.state
        n = len(self.data)
        tail = n % settings.batch_size
        per_epoch = n - (tail if 0 < tail < self.smallest else 0)  # images per epoch, as batches() yields them
        done = per_epoch * (state.epoch - 1) + (state.partial.seen if state.partial else 0)
        self.bar = self.reporter.bar("train", total=per_epoch * settings.epochs, completed=done)
        with _StopOnSignal() as stop:
            while state.epoch <= settings.epochs:
                epoch = state.partial or EpochProgress(
                    batches(n, settings.batch_size, self.streams.batches, self.smallest, self.weights)
                )
                state.partial = None
                out_of_time = self.run_epoch(state.epoch, epoch, stop)
                row = epoch.row(state.epoch, epoch.seconds)
                state.history.append(row)
                self.bar.line(
                    f"epoch {state.epoch}/{settings.epochs}: loss {row.get('loss', 0.0):.3f}, "
                    f"{row['images_per_second']:.0f} images/s"
                )
                if out_of_time:
                    self.bar.line(f"time budget of {settings.time_budget:g} s reached in epoch {state.epoch}")
                    break
                state.epoch += 1
                self.save(state.epoch, None)
        if self.averaged is not None and state.history:
            self.estimator.load_state_dict(self.averaged.module.state_dict())
        if state.history and settings.bn_recalibration and self.world.is_main:  # only rank 0's model is kept
            recalibrate_batchnorm(
                self.estimator, self.data, settings.bn_recalibration, settings.batch_size, self.streams.batches
            )
        return state.history

    def run_epoch(self, number: int, epoch: EpochProgress, stop: _StopOnSignal) -> bool:
        """Run ``epoch``'s remaining steps; True when the time budget ended it."""
        settings = self.settings
        start = self.elapsed() - epoch.seconds
        while epoch.step < len(epoch.batches):
            over_budget = settings.time_budget is not None and self.elapsed() >= settings.time_budget
            interrupted, over_budget = distributed.any_rank([stop.signum is not None, over_budget], self.world)
            if interrupted:
                epoch.seconds = self.elapsed() - start
                self.save(number, epoch)
                signum = stop.signum or signal.SIGINT  # a process that got no signal stops with the others
                how = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
                message = f"{how} in epoch {number}, step {epoch.step + 1}"
                if self.checkpoint is not None:
                    message += f"; checkpoint saved, continue with: agemetric run --resume {self.checkpoint.parent}"
                raise Interrupted(message, signum)
            if over_budget:
                epoch.seconds = self.elapsed() - start
                return True
            self.set_lr(number, epoch)
            self.step(number, epoch)
            if self.on_step is not None:
                self.began += self.on_step(self.elapsed(), self.current()) or 0.0
            epoch.seconds = self.elapsed() - start
            speed = epoch.seen / max(epoch.seconds, 1e-9)
            # the bar counts the run's images: the epoch is part of its status, not its name
            self.bar.advance(
                epoch.batches[epoch.step - 1].numel(),
                status=f"epoch {number}/{settings.epochs}, loss {epoch.step_losses[-1]:6.1f}, {speed:4.0f} img/s",
            )
        return False

    def set_lr(self, number: int, epoch: EpochProgress) -> None:
        """The scheduled learning rate: by steps, or by time when the budget ends training first."""
        settings = self.settings
        if settings.warmup == 0 and settings.lr_schedule == "constant":
            return
        steps = len(epoch.batches)
        progress = ((number - 1) * steps + epoch.step) / (settings.epochs * steps)
        if settings.time_budget is not None:
            progress = max(progress, self.elapsed() / settings.time_budget)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * lr_factor(progress, settings)

    def step(self, number: int, epoch: EpochProgress) -> None:
        """One optimiser step on the epoch's next batch (this process's share of it)."""
        data, world = self.data, self.world
        index = epoch.batches[epoch.step]
        mine, sizes = world.share(index)
        options = self.settings.augment_options
        augmentation = (lambda x: augment(x, self.streams.augment, **options)) if self.settings.augment else None
        x = self.estimator.prepare(data.images[mine], augmentation)
        gather = (lambda t: distributed.gather(t, sizes, world)) if world.active else None
        parts = self.step_module(x, data.ages[mine], data.genders[mine], gather)
        loss = parts["loss"]
        if not torch.isfinite(loss):
            kept = f"; the checkpoint of epoch {number - 1} is kept" if self.checkpoint and number > 1 else ""
            raise TrainingDiverged(
                f"training diverged at epoch {number}, step {epoch.step + 1}: loss is {float(loss.detach())}; "
                f"try a smaller lr or --bf16 off{kept}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.estimator)
        epoch.record(parts, index.numel())

    def current(self) -> AgeEstimator:
        """The weights training would end with now: the average when weights are averaged."""
        return self.estimator if self.averaged is None else self.averaged.module


def train(
    estimator: AgeEstimator,
    data: FaceArrays,
    settings: TrainingSettings,
    reporter: Reporter | None = None,
    world: distributed.World | None = None,
    checkpoint: Path | None = None,
    resume: dict | None = None,
    on_step: Callable[[float, AgeEstimator], float | None] | None = None,
    extra: dict | None = None,
    *,
    seed: int = 0,
) -> list[dict]:
    """Train ``estimator`` on ``data`` for ``settings.epochs`` epochs.

    Args:
        estimator: the model (its parameters are updated in place).
        data: the training split.
        settings: epochs, batch size, optimiser and schedule, weight averaging, augmentation (a
            run's ``config.training``).
        reporter: where the bar (``train``) and a line per epoch go
            (`agemetric.reporting.Reporter`); ``None``: nowhere.
        world: in data-parallel training (`agemetric.distributed`), this process: every
            process draws the same global batches, embeds its share, and the loss spans the
            gathered global batch. ``None``: one process.
        checkpoint: where to write the training state (atomically: a temporary file, then a
            rename) after every epoch and when Ctrl-C stops training; ``None``: nowhere.
        resume: a state read back by `load_checkpoint()`: training continues exactly where
            it stopped (weights, optimiser, random streams, the interrupted epoch's batches).
        on_step: called after every optimiser step with the seconds of training so far and the
            weights training would end with now (the averaged ones with ``weight_average``); it
            may return seconds it spent itself (e.g. evaluating a snapshot), which are left out
            of the training time and the budget.
        extra: plain data the checkpoint keeps as well (``"extra"`` in what `load_checkpoint()`
            reads back), e.g. the description of the split for the metrics of a resumed run.
        seed: seeds the batch order and the augmentation (a run's ``config.seed``).

    Training stops early, between two steps, once ``settings.time_budget`` seconds have passed
    (time spent before a resume counts). The first Ctrl-C (SIGINT) or SIGTERM also stops it
    between two steps: the state is checkpointed and `Interrupted` raised (its exit code 130 for
    SIGINT, 143 for SIGTERM); a second signal acts at once, as it would without training.

    Returns:
        One dict per epoch (the last one possibly partial): ``epoch``, mean ``loss`` (and
        ``age``/``gender`` parts), ``images`` seen, ``seconds``, ``images_per_second``, and
        ``step_losses`` (the total loss of each step, for the training curve).

    Raises:
        TrainingDiverged: on a NaN or infinite loss (the last checkpoint, from before it, stays).
        Interrupted: on Ctrl-C or SIGTERM, after writing the checkpoint.
    """
    if not isinstance(settings, TrainingSettings):
        raise AgemetricError(
            f"settings: train() takes training settings (a run's config.training), got {type(settings).__name__}"
        )
    world = world or distributed.World()
    training = _Training(
        estimator, data, settings, seed, reporter or SILENT, world, checkpoint, resume, on_step, extra or {}
    )
    return training.run()


class _StopOnSignal:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM only records its number in `signum`; a
    second signal of either kind acts as it would without this (Ctrl-C interrupts at once).

    Signal handlers can only be set from the main thread; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        self.signum = self.signum or signum
        self._restore()  # the next signal acts as usual

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)  # None: set outside Python

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


def _detail(exc: RuntimeError, most: int = 200) -> str:
    """What torch says is wrong with a state dict: the line naming the first tensor that does not fit."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    detail = printable(lines[1] if len(lines) > 1 else lines[0])
    return detail if len(detail) <= most else detail[: most - 3] + "..."


@torch.no_grad()
def _materialise_lazy(estimator: AgeEstimator, data: FaceArrays, n: int) -> None:
    """Run one batch through the loss when a part has lazy parameters (DDP cannot wrap those)."""
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in estimator.parameters()):
        index = torch.arange(min(n, len(data)))
        TrainStep(estimator)(estimator.prepare(data.images[index]), data.ages[index], data.genders[index])
