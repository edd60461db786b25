"""agemetric-crcnn: CRCNN-style comparative age estimation (Abousaleh et al., 2016) for agemetric.

Registers the loss ``crcnn`` (a younger / similar / older pair classifier trained with the
backbone) and the retriever ``crcnn-compare`` (age by comparison with reference faces).
"""

from __future__ import annotations

from agemetric import hookimpl
from agemetric_crcnn.loss import CRCNNLoss
from agemetric_crcnn.retriever import CRCNNCompare

__all__ = ["CRCNNCompare", "CRCNNLoss"]


@hookimpl
def register_losses(register):
    register("crcnn", CRCNNLoss)


@hookimpl
def register_retrievers(register):
    register("crcnn-compare", CRCNNCompare)
