"""Face framing that ships with agemetric: ``center`` (cropped faces) and ``box`` (mug-shots)."""

from __future__ import annotations

from PIL import Image

from agemetric._imaging import DEFAULT_BOX, checked_box, crop_box
from agemetric.hookspecs import hookimpl
from agemetric.interfaces.framer import Framer


class CenterFramer(Framer):
    """The whole image (then its centre square): right for aligned, cropped faces (UTKFace,
    MegaAge-Asian's aligned images).

    Examples:
        >>> CenterFramer()(Image.new("RGB", (100, 80))).image.size  # the whole photo
        (100, 80)
    """

    def frame(self, image: Image.Image) -> Image.Image:
        return image

    def bundle_framing(self) -> dict | None:
        return {"name": "center"} if type(self) is CenterFramer else None  # a subclass may frame otherwise


class BoxFramer(Framer):
    """A fixed crop box, in fractions of the width and height, grown by ``margin`` on each side.

    For uncropped frontal photos where the face sits at a known place, e.g. MORPH's mug-shots.
    The default box, the middle 70 % of the width and the top 80 % of the height, is a starting
    point, not a measured optimum; check a few crops (``agemetric predict`` uses the same framing).

    Args:
        box: ``(left, top, right, bottom)``, each in [0, 1].
        margin: extra border as a fraction of the box's size (clipped to the image).

    Examples:
        >>> BoxFramer()(Image.new("RGB", (100, 100))).image.size  # middle 70 % of the width, top 80 %
        (70, 80)
        >>> BoxFramer(box=(0.25, 0.25, 0.75, 0.75), margin=0.1)(Image.new("RGB", (100, 100))).image.size
        (60, 60)
    """

    def __init__(self, box: tuple[float, float, float, float] = DEFAULT_BOX, margin: float = 0.0):
        self.box, self.margin = checked_box(box, margin)

    def frame(self, image: Image.Image) -> Image.Image:
        return crop_box(image, self.box, self.margin)

    def bundle_framing(self) -> dict | None:
        if type(self) is not BoxFramer:  # a subclass may frame otherwise
            return None
        return {"name": "box", "box": list(self.box), "margin": self.margin}


@hookimpl
def register_framers(register):
    register("center", CenterFramer)
    register("box", BoxFramer)
