"""What training carries between steps and across a resume: the epoch under way, the history,
the random streams, and the checkpoint that holds them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from agemetric import distributed
from agemetric._io import load_torch
from agemetric._text import shortened
from agemetric.errors import AgemetricError

#: The version of the training checkpoint's layout (``checkpoint.pt`` in a run folder).
TRAINING_STATE_FORMAT = 1


@dataclass
class EpochProgress:
    """One epoch under way: its batches, the next step, and what the finished steps added up to."""

    batches: list[torch.Tensor]
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    step_losses: list[float] = field(default_factory=list)
    seen: int = 0
    seconds: float = 0.0  # of training in this epoch before an interruption

    def record(self, parts: dict[str, torch.Tensor], images: int) -> None:
        """Add one finished step's loss parts and image count."""
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.step_losses.append(float(parts["loss"].detach()))
        self.seen += images
        self.step += 1

    def row(self, epoch: int, seconds: float) -> dict:
        """The epoch's line of the history."""
        steps = max(len(self.step_losses), 1)
        return {
            "epoch": epoch,
            **{key: value / steps for key, value in self.sums.items()},
            "images": self.seen,
            "seconds": seconds,
            "images_per_second": self.seen / max(seconds, 1e-9),
            "step_losses": self.step_losses,
        }


@dataclass
class TrainState:
    """Where training stands between two steps: what a checkpoint holds besides the tensors."""

    epoch: int = 1  # the epoch to run (or finish) next
    partial: EpochProgress | None = None  # that epoch, when it was interrupted
    history: list[dict] = field(default_factory=list)
    elapsed: float = 0.0  # seconds of training so far


class RandomStreams:
    """The batch order (the same on every process) and the augmentation draws (one process draws
    them from the batch-order stream; N processes each from their own), saved and restored on
    resume."""

    def __init__(self, seed: int, world: distributed.World):
        self.batches = torch.Generator().manual_seed(seed)
        self.augment = torch.Generator().manual_seed(seed + 7919 * world.rank) if world.active else self.batches

    def state(self) -> dict:
        return {
            "batches": self.batches.get_state(),
            "augment": self.augment.get_state(),
            "torch": torch.get_rng_state(),
        }

    def restore(self, state: dict) -> None:
        self.batches.set_state(state["batches"])
        self.augment.set_state(state["augment"])
        torch.set_rng_state(state["torch"])


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint written by `train()`, its fields checked (one-line errors naming
    the file and the field; whether the weights and the optimiser's state fit the run's model is
    checked when training restores them)."""
    state = load_torch(path, "resume")
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        raise AgemetricError(f"resume: {str(path)!r} is not an agemetric training checkpoint")
    _check_fields(state, path)
    return state


def _check_fields(state: dict, path: Path) -> None:
    """The checkpoint's fields have the types `train()` writes (see `_Training.save`)."""

    def check(ok: bool, name: str, expected: str, value: object) -> None:
        if not ok:
            raise AgemetricError(f"resume: {path}: {name} must be {expected}, got {shortened(value)}")

    epoch, elapsed, images = state.get("epoch"), state.get("elapsed"), state.get("images")
    check(_whole(epoch, 1), "epoch", "a whole number >= 1", epoch)
    check(_number(elapsed, 0), "elapsed", "a number of seconds >= 0", elapsed)
    check(images is None or _whole(images), "images", "a whole number", images)
    for name in ("settings", "extra"):
        check(isinstance(state.get(name), dict | None), name, "a table", state.get(name))
    for name in ("split", "settings"):
        value = (state.get("extra") or {}).get(name)
        check(isinstance(value, dict | None), f"extra.{name}", "a table", value)
    history = state.get("history")
    check(isinstance(history, list), "history", "a list of epochs", history)
    for i, row in enumerate(history):
        check(isinstance(row, dict), f"history[{i}]", "a table", row)
        for key, least in (("epoch", 1), ("images", 0)):
            check(_whole(row.get(key), least), f"history[{i}].{key}", f"a whole number >= {least}", row.get(key))
        losses = row.get("step_losses", [])
        check(_numbers(losses), f"history[{i}].step_losses", "a list of numbers", losses)
    _check_partial(state.get("partial"), check)
    for name in ("model", "averaged"):
        tensors = state.get(name)
        ok = isinstance(tensors, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())
        check(ok or (name == "averaged" and tensors is None), name, "a table of tensors", tensors)
    optimizer = state.get("optimizer")
    ok = isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
    check(ok and isinstance(optimizer.get("param_groups"), list), "optimizer", "an optimiser's state", optimizer)
    rng = state.get("rng")
    ok = isinstance(rng, dict) and all(_generator_state(rng.get(key)) for key in ("batches", "augment", "torch"))
    check(ok, "rng", "the states of its three random generators", rng)


def _check_partial(partial: object, check) -> None:
    """An interrupted epoch (`EpochProgress`'s fields), or ``None``."""
    if partial is None:
        return
    fields = [f.name for f in dataclasses.fields(EpochProgress)]
    check(
        isinstance(partial, dict) and set(partial) == set(fields), "partial", f"a table of {', '.join(fields)}", partial
    )
    batches, step = partial["batches"], partial["step"]
    ok = isinstance(batches, list) and all(isinstance(b, torch.Tensor) and b.dim() == 1 for b in batches)
    ok = ok and all(b.dtype in (torch.int32, torch.int64) for b in batches)
    check(ok, "partial.batches", "a list of 1-d tensors of image indices", batches)
    check(_whole(step) and step <= len(batches), "partial.step", f"a whole number <= {len(batches)}", step)
    check(_whole(partial["seen"]), "partial.seen", "a whole number", partial["seen"])
    check(_number(partial["seconds"], 0), "partial.seconds", "a number >= 0", partial["seconds"])
    sums, losses = partial["sums"], partial["step_losses"]
    ok = isinstance(sums, dict) and all(isinstance(k, str) and _number(v) for k, v in sums.items())
    check(ok, "partial.sums", "a table of numbers", sums)
    check(_numbers(losses), "partial.step_losses", "a list of numbers", losses)


def check_fits(saved: dict, optimizer: torch.optim.Optimizer, images: int, source: Path | str) -> None:
    """What `load_checkpoint()` cannot check alone: that the optimiser's state fits this run's
    optimiser (its groups, the shapes of its parameters, the kinds of its settings) and that the
    interrupted epoch's batches index this run's ``images`` training images."""

    def refuse(what: str) -> AgemetricError:
        return AgemetricError(f"resume: {source}: {what}; it cannot be continued")

    groups, state = saved["optimizer"]["param_groups"], saved["optimizer"]["state"]
    if len(groups) != len(optimizer.param_groups):
        raise refuse(f"its optimiser has {len(groups)} parameter group(s), this run's {len(optimizer.param_groups)}")
    for number, (group, own) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        name = f"optimizer.param_groups[{number}]"
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(map(_whole, params)):
            raise refuse(f"{name} must be a table with a list of parameter numbers, got {shortened(group)}")
        if len(group["params"]) != len(own["params"]):
            raise refuse(f"{name} has {len(group['params'])} parameters, this run's {len(own['params'])}")
        for key, value in own.items():
            if key != "params" and key in group and not _same_kind(group[key], value):
                raise refuse(f"{name}.{key} must be like {value!r}, got {shortened(group[key])}")
        for index, param in zip(group["params"], own["params"], strict=True):
            values = state.get(index) or {}
            if not isinstance(values, dict):
                raise refuse(f"optimizer.state[{index}] must be a table of tensors, got {shortened(values)}")
            for key, value in values.items():
                name = f"optimizer.state[{index}].{key}"
                if not (value is None or _number(value) or isinstance(value, torch.Tensor)):
                    raise refuse(f"{name} must be a tensor, got {shortened(value)}")
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise refuse(f"{name} has shape {list(value.shape)}, its parameter {list(param.shape)}")
    for batch in (saved["partial"] or {}).get("batches", []):
        if len(batch) and not 0 <= int(batch.min()) <= int(batch.max()) < images:
            raise refuse(f"partial.batches index images beyond the {images} of the training split")


def _same_kind(saved: object, own: object) -> bool:
    """Whether an optimiser setting read back is of the kind of this run's (a number, a flag, a tuple of numbers)."""
    if isinstance(own, bool) or own is None:
        return isinstance(saved, bool) or saved is None
    if isinstance(own, int | float):
        return _number(saved)
    if isinstance(own, tuple | list):
        return isinstance(saved, tuple | list) and len(saved) == len(own) and all(map(_number, saved))
    return True


def _whole(value: object, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value: object, least: float = -math.inf) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= least


def _numbers(values: object) -> bool:
    return isinstance(values, list) and all(map(_number, values))


def _generator_state(value: object) -> bool:
    """Whether a CPU random generator takes ``value`` as its state."""
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        return False
    try:
        torch.Generator().set_state(value)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True
