"""``model.pt``: what `AgeEstimator.save()` writes and `AgeEstimator.load()` reads.

A dict of tensors and plain values (read with ``weights_only``: never unpickled code): the
model's spec, the backbone's and losses' weights, the retriever's gallery, the calibrated
intervals, and what `AgeEstimator.adapt()` chose. Format 1 stored the whole run config instead of
the spec; it is still read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agemetric._io import atomic_torch_save, load_torch
from agemetric.config import RunConfig
from agemetric.devices import flush_subnormals
from agemetric.errors import AgemetricError
from agemetric.intervals import ConformalIntervals
from agemetric.spec import ModelSpec

if TYPE_CHECKING:
    from agemetric.estimator import AgeEstimator

#: The version of model.pt's layout (what `write_model` writes).
MODEL_FORMAT = 2


def write_model(estimator: AgeEstimator, path: Path) -> None:
    """Write ``estimator`` to ``path`` atomically."""
    state = {
        "format": MODEL_FORMAT,
        "spec": estimator.spec.to_dict(),
        "backbone": estimator.backbone.state_dict(),
        # empty unless a loss has parameters (e.g. a comparator head)
        "loss": estimator.loss.state_dict(),
        "gender_loss": None if estimator.gender_loss is None else estimator.gender_loss.state_dict(),
        "retriever": estimator.retriever.state_dict(),
        "intervals": None if estimator.intervals is None else estimator.intervals.to_dict(),
        "adaptation": estimator.adaptation,
    }
    atomic_torch_save(state, path)


def read_model(cls: type[AgeEstimator], path: Path) -> AgeEstimator:
    """Rebuild an estimator of class ``cls`` from `write_model()`'s file, in eval mode."""
    state = load_torch(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") not in (1, MODEL_FORMAT):
        raise AgemetricError(f"{path}: not an agemetric checkpoint (format {MODEL_FORMAT})")
    try:
        if state["format"] == 1:  # the whole run config, and the gender task beside it
            spec = ModelSpec.from_config(RunConfig.from_flat(**state["config"]), multitask=state["multitask"])
        else:
            spec = ModelSpec.from_dict(state["spec"])
        est = cls.from_spec(spec)
        est.backbone.load_state_dict(state["backbone"])
        flush_subnormals(est.backbone)  # a model saved before they were flushed at creation
        est.loss.load_state_dict(state.get("loss") or {})
        if est.gender_loss is not None:
            est.gender_loss.load_state_dict(state.get("gender_loss") or {})
        if state["retriever"]["embeddings"] is not None:
            est.retriever.load_state_dict(state["retriever"])
        if state.get("intervals") is not None:
            est.intervals = ConformalIntervals.from_dict(state["intervals"])
        if not isinstance(state.get("adaptation"), dict | None):
            raise TypeError(f"adaptation must be a table, got {type(state['adaptation']).__name__}")
        est.adaptation = state.get("adaptation")
    except (KeyError, TypeError, ValueError, RuntimeError, AgemetricError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else (str(exc).strip().splitlines() or [""])[0]
        raise AgemetricError(
            f"{path}: cannot rebuild the model ({what}); it may come from another agemetric version or "
            "need a plugin that is not installed"
        ) from None
    est.eval()
    return est
