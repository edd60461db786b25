"""Framers: how a face is cut out of a photo before it is resized for the network.

``center`` (the default) takes the middle of an aligned crop; ``box`` a fixed box for mug-shots;
plugins add detectors (``dlib-align`` in agemetric-dlib).
"""

from agemetric.default_plugins.framing import BoxFramer, CenterFramer
from agemetric.interfaces import Face, Framer

__all__ = ["BoxFramer", "CenterFramer", "Face", "Framer"]
