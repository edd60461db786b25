"""The interfaces every plugin implements: small base classes that check, then delegate.

The public method (``forward``, ``search``, ...) validates its inputs and outputs and names
what it expected; the subclass implements one abstract method (``embed``, ``mine``,
``compute``, ``_search``, ``records``).

Each name is imported on first use, so a plugin that needs only `Framer` (a process that only
frames photos, such as ``agemetric serve``'s) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agemetric._lazy import lazy_getattr

#: public name -> the module that defines it
_LAZY = {
    "Backbone": "agemetric.interfaces.backbone",
    "FaceDataset": "agemetric.interfaces.dataset",
    "FaceRecord": "agemetric.interfaces.dataset",
    "Skipped": "agemetric.interfaces.dataset",
    "Face": "agemetric.interfaces.framer",
    "Framer": "agemetric.interfaces.framer",
    "Loss": "agemetric.interfaces.loss",
    "Miner": "agemetric.interfaces.miner",
    "Retriever": "agemetric.interfaces.retriever",
}

if TYPE_CHECKING:
    from agemetric.interfaces.backbone import Backbone
    from agemetric.interfaces.dataset import FaceDataset, FaceRecord, Skipped
    from agemetric.interfaces.framer import Face, Framer
    from agemetric.interfaces.loss import Loss
    from agemetric.interfaces.miner import Miner
    from agemetric.interfaces.retriever import Retriever


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["Backbone", "Face", "FaceDataset", "FaceRecord", "Framer", "Loss", "Miner", "Retriever", "Skipped"]
