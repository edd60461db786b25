"""The interfaces every plugin implements: small base classes that check, then delegate.

The public method (``forward``, ``search``, ...) validates its inputs and outputs and names
what it expected; the subclass implements one abstract method (``embed``, ``mine``,
``compute``, ``_search``, ``records``).
"""

from agemetric.interfaces.backbone import Backbone
from agemetric.interfaces.dataset import FaceDataset, FaceRecord, Skipped
from agemetric.interfaces.framer import Face, Framer
from agemetric.interfaces.loss import Loss
from agemetric.interfaces.miner import Miner
from agemetric.interfaces.retriever import Retriever

__all__ = ["Backbone", "Face", "FaceDataset", "FaceRecord", "Framer", "Loss", "Miner", "Retriever", "Skipped"]
