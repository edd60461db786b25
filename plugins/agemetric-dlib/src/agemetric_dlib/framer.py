"""``dlib-align``: find faces with dlib's HOG detector (its CNN detector where HOG finds none; or
MTCNN), align each on 5 landmarks, cut a chip.

The chip is made the way dlib's ``get_face_chip`` makes one (``get_face_chip_details`` +
``extract_image_chip``): the five landmarks (eye corners and the base of the nose) are mapped by a
similarity transform onto dlib's reference positions, so the eyes are level and at a fixed place
whatever the photo's framing. That is the input dlib's age network was trained on, and it makes a
selfie, a mug-shot with shoulders and an already cropped face (UTKFace) look alike to the network.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from agemetric.interfaces.framer import Face, Framer
from agemetric_dlib.models import CNN_DETECTOR_MODEL, LANDMARK_MODEL, model_file

_local = threading.local()  # one detector and landmark model per thread (decoding uses a thread pool)
#: what can find the faces: dlib's HOG detector, dlib's CNN (MMOD), MTCNN; ``detector`` names one,
#: or several joined by ``+`` (each asked only where the ones before it found nothing)
DETECTORS = ("hog", "cnn", "mtcnn")


def _landmarks():
    if not hasattr(_local, "landmarks"):
        import dlib

        _local.landmarks = dlib.shape_predictor(str(model_file(LANDMARK_MODEL)))
    return _local.landmarks


def _detect(kind: str, pixels: np.ndarray, upsample: int) -> list:
    """dlib rectangles of the faces in ``pixels`` found by the ``"hog"``, ``"cnn"`` or ``"mtcnn"`` detector."""
    if kind == "mtcnn":
        from agemetric_dlib.mtcnn import detect

        return [_box_from_points(points) for points in detect(pixels)[2]]
    if not hasattr(_local, kind):
        import dlib

        made = (
            dlib.get_frontal_face_detector()
            if kind == "hog"
            else dlib.cnn_face_detection_model_v1(str(model_file(CNN_DETECTOR_MODEL)))
        )
        setattr(_local, kind, made)
    found = getattr(_local, kind)(pixels, upsample)
    return list(found) if kind == "hog" else [d.rect for d in found]


def _box_from_points(points: np.ndarray):
    """The box dlib's detectors would give a face, from MTCNN's 5 points ``(5, 2)`` (eyes, nose,
    mouth corners): a square 2.2 eye-to-mouth distances wide, its top half a distance above the
    eyes. dlib's landmark model starts from its detectors' boxes; fitted on UTKFace faces, its
    landmarks from this box are 1.6 pixels from those found from HOG's box (2.5 from MTCNN's own)."""
    import dlib

    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    distance = float(np.linalg.norm(mouth - eyes))
    centre, top, side = (eyes[0] + mouth[0]) / 2, eyes[1] - 0.52 * distance, 2.2 * distance
    return dlib.rectangle(round(centre - side / 2), round(top), round(centre + side / 2), round(top + side))


#: the smallest photo side searched for faces: the detectors find none smaller (MTCNN's smallest
#: face is 20 px), and dlib's HOG detector fails on an image of 8 px (an error, then a crash)
MIN_SIDE = 20


class DlibAlignFramer(Framer):
    """Faces found by dlib's detectors, each aligned on its 5 landmarks into a square chip.

    Args:
        size: the chip's side in pixels (128: the network's input, e.g. 64 px, is then a
            downscale, never an upscale, for any image size up to 128).
        padding: border around the landmarks' reference box as a fraction of its size; 0.2 is
            dlib's default and the framing dlib's age network was trained with.
        detect_side: the photo is scaled so that its longer side is at most this many pixels for
            detection (bounded time and memory on huge photos); landmarks and the chip use the
            photo at full resolution.
        upsample: how many times the detector doubles the image first (finds smaller faces, 4x
            slower per step). When nothing is found at this level, one more doubling is tried
            on photos whose longer side is under ``detect_side``.
        fallback: when no face is found: ``"center"`` (the whole photo, as ``--framing center``)
            or ``"landmarks"`` (the whole photo taken as the face box, then aligned: right for
            tightly cropped faces the detector misses).
        detector: ``"hog+cnn"`` (the default: HOG, and the CNN on the photos where HOG finds no
            face), ``"hog"`` (dlib's HOG detector: fast, frontal faces), ``"cnn"`` (dlib's CNN
            detector, MMOD: 40 times slower on a CPU), ``"mtcnn"`` (MTCNN's three small networks,
            faces from 20 pixels), or any of them joined by ``+``, each asked only where the ones
            before it found nothing. Measured side by side on the benchmarks page: HOG and the
            CNN together find 94 % of the faces HOG misses at HOG's speed on the photos where HOG
            finds one.

    For training and evaluation the largest face is used; ``agemetric predict`` estimates every
    face (`faces()`). A fallback is reported in the `agemetric.interfaces.Face` note.
    """

    def __init__(
        self,
        size: int = 128,
        padding: float = 0.2,
        detect_side: int = 1024,
        upsample: int = 0,
        fallback: str = "center",
        detector: str = "hog+cnn",
    ):
        if size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {size}")
        if not 0 <= padding <= 2:
            raise ValueError(f"padding must be between 0 and 2, got {padding}")
        if detect_side < 64:
            raise ValueError(f"detect_side must be >= 64 pixels, got {detect_side}")
        if upsample not in (0, 1, 2):
            raise ValueError(f"upsample must be 0, 1 or 2, got {upsample}")
        if fallback not in ("center", "landmarks"):
            raise ValueError(f"fallback must be 'center' or 'landmarks', got {fallback!r}")
        kinds = str(detector).split("+")
        if not set(kinds) <= set(DETECTORS) or len(set(kinds)) < len(kinds):
            raise ValueError(f"detector must be one of {', '.join(DETECTORS)} or several joined by +, got {detector!r}")
        self.size, self.padding, self.detect_side = int(size), float(padding), int(detect_side)
        self.upsample, self.fallback, self.detector = int(upsample), fallback, detector

    @property
    def chip_size(self) -> int:
        """Every aligned face is a ``size`` x ``size`` chip (a photo without a face found is
        cached at that side too)."""
        return self.size

    def boxes(self, image: Image.Image) -> list[tuple[int, int, int, int]]:
        """Face boxes ``(left, top, right, bottom)`` in the photo's pixels, largest first (none in
        a photo with a side under `MIN_SIDE` pixels, which no detector here can search)."""
        if min(image.size) < MIN_SIDE:
            return []
        scale = min(1.0, self.detect_side / max(image.size))
        small = (
            image
            if scale == 1.0
            else image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
            )
        )
        pixels = np.asarray(small, dtype=np.uint8)
        found = []
        for kind in self.detector.split("+"):  # the CNN only where HOG found nothing
            found = _detect(kind, pixels, self.upsample)
            if len(found) == 0 and scale == 1.0 and self.upsample < 2 and kind != "mtcnn":  # mtcnn: 20 px already
                found = _detect(kind, pixels, self.upsample + 1)
            if found:
                break
        w, h = image.size
        boxes = [
            (
                max(0, round(r.left() / scale)),
                max(0, round(r.top() / scale)),
                min(w, round((r.right() + 1) / scale)),
                min(h, round((r.bottom() + 1) / scale)),
            )
            for r in found
        ]
        boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)

    def chip(self, image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
        """The aligned chip of the face in ``box``."""
        import dlib

        pixels = np.asarray(image, dtype=np.uint8)
        shape = _landmarks()(pixels, dlib.rectangle(box[0], box[1], box[2] - 1, box[3] - 1))
        details = dlib.get_face_chip_details(shape, self.size, self.padding)
        return Image.fromarray(np.ascontiguousarray(dlib.extract_image_chip(pixels, details)))

    def faces(self, image: Image.Image) -> list[Face]:
        image = image.convert("RGB")
        found = [Face(self.chip(image, box), box) for box in self.boxes(image)]
        return found or [self._fallback(image)]

    def frame(self, image: Image.Image) -> Face:
        boxes = self.boxes(image)
        if not boxes:
            return self._fallback(image)
        return Face(self.chip(image, boxes[0]), boxes[0])

    def _fallback(self, image: Image.Image) -> Face:
        if self.fallback == "landmarks":
            whole = (0, 0, image.width, image.height)
            return Face(self.chip(image, whole), None, "no face found: aligned on the whole image")
        return Face(image, None, "no face found: centre framing")
