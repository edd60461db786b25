"""Which face detector ``dlib-align`` should use: dlib's HOG detector, its CNN detector (MMOD),
MTCNN, or one of them with another where it finds no face, measured side by side on the same photos.

Photo sets, all made from UTKFace here (the only faces at hand):

- ``utkface``: a random sample of its aligned 200 px faces, as they are;
- ``hog misses``: faces where HOG found none (a run's ``framing.csv`` lists them, ``--misses``);
- ``turned``: the sample rotated by 30 degrees;
- ``small``: the sample shrunk to 48 px and pasted in the middle of a 320 px grey photo;
- ``dark``: the sample at a quarter of its brightness.

For each detector and set: the share of photos where a face is found, and the milliseconds per
photo (detection, landmarks and the aligned chip, one photo at a time, as a decoding worker runs
the framer).

Usage::

    python benchmarks/detectors.py --data-dir path/to/UTKFace --misses runs/adapt/run/framing.csv \
        --detectors hog,cnn,hog+cnn,mtcnn,hog+mtcnn
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

from agemetric_dlib.framer import DlibAlignFramer
from PIL import Image, ImageEnhance


def photo_sets(data_dir: Path, sample: int, misses: Path | None, seed: int) -> dict[str, list[Image.Image]]:
    files = sorted(data_dir.glob("*.jpg.chip.jpg"))
    picked = [Image.open(p).convert("RGB") for p in random.Random(seed).sample(files, sample)]
    sets = {"utkface": picked}
    if misses is not None:
        with misses.open() as f:
            sets["hog misses"] = [Image.open(r["item"]).convert("RGB") for r in csv.DictReader(f)]
    sets["turned"] = [p.rotate(30, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128)) for p in picked]
    small = []
    for p in picked:
        canvas = Image.new("RGB", (320, 320), (128, 128, 128))
        canvas.paste(p.resize((48, 48), Image.Resampling.BILINEAR), (136, 136))
        small.append(canvas)
    sets["small"] = small
    sets["dark"] = [ImageEnhance.Brightness(p).enhance(0.25) for p in picked]
    return sets


def measure(framer: DlibAlignFramer, photos: list[Image.Image]) -> tuple[float, float]:
    """``(share of photos with a face found, seconds per photo)``."""
    framer(photos[0])  # load the models first
    start = time.perf_counter()
    found = sum(framer(p).note is None for p in photos)
    return found / len(photos), (time.perf_counter() - start) / len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the UTKFace folder")
    parser.add_argument("--misses", type=Path, help="a run's framing.csv: the photos where HOG found no face")
    parser.add_argument("--sample", type=int, default=300, help="UTKFace faces drawn at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sets", default="utkface,hog misses,turned,small,dark", help="the photo sets, comma-separated"
    )
    parser.add_argument(
        "--detectors", default="hog,cnn,hog+cnn,mtcnn,hog+mtcnn", help="dlib-align's detector settings, comma-separated"
    )
    args = parser.parse_args()
    detectors = args.detectors.split(",")
    sets = photo_sets(args.data_dir, args.sample, args.misses, args.seed)
    print("| photos | " + " | ".join(f"{d}: found | {d}: ms per photo" for d in detectors) + " |")
    print("|---|" + "---|---|" * len(detectors))
    for name in args.sets.split(","):
        photos = sets[name]
        cells = []
        for detector in detectors:
            share, seconds = measure(DlibAlignFramer(detector=detector), photos)
            cells += [f"{100 * share:.1f} %", f"{1000 * seconds:.0f}"]
        print(f"| {name} ({len(photos)}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
