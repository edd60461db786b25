"""agemetric-crcnn: CRCNN-style comparative age estimation (Abousaleh et al., 2016) for agemetric.

Registers the loss ``crcnn`` (a younger / similar / older pair classifier trained with the
backbone, `agemetric_crcnn.loss.CRCNNLoss`) and the retriever ``crcnn-compare`` (age by
comparison with reference faces, `agemetric_crcnn.retriever.CRCNNCompare`). The top level holds
the hooks alone (every agemetric command imports it); the modules behind them, which import
torch, load when a hook is called.
"""

from __future__ import annotations

from agemetric import hookimpl


@hookimpl
def register_losses(register):
    from agemetric_crcnn.loss import CRCNNLoss

    register("crcnn", CRCNNLoss)


@hookimpl
def register_retrievers(register):
    from agemetric_crcnn.retriever import CRCNNCompare

    register("crcnn-compare", CRCNNCompare)
