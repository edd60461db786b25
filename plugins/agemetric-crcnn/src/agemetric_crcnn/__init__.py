"""agemetric-crcnn: CRCNN-style comparative age estimation (Abousaleh et al., 2016) for agemetric.

Registers the loss ``crcnn`` (a younger / similar / older pair classifier trained with the
backbone) and the retriever ``crcnn-compare`` (age by comparison with reference faces). The
top level holds the hooks alone (every agemetric command imports it); the loss and the
retriever, which import torch, load when a hook is called or a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agemetric import hookimpl

#: public name -> the module that defines it
_LAZY = {"CRCNNLoss": "agemetric_crcnn.loss", "CRCNNCompare": "agemetric_crcnn.retriever"}

if TYPE_CHECKING:
    from agemetric_crcnn.loss import CRCNNLoss
    from agemetric_crcnn.retriever import CRCNNCompare


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agemetric_crcnn' has no attribute {name!r}")


__all__ = ["CRCNNCompare", "CRCNNLoss"]


@hookimpl
def register_losses(register):
    from agemetric_crcnn.loss import CRCNNLoss

    register("crcnn", CRCNNLoss)


@hookimpl
def register_retrievers(register):
    from agemetric_crcnn.retriever import CRCNNCompare

    register("crcnn-compare", CRCNNCompare)
