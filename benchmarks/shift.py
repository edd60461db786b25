"""Intervals and group errors under shift: a UTKFace run's model scored on its test faces as
another camera or framing would give them.

Only UTKFace is at hand here, so the "other datasets" are its test faces changed the way other
sources differ: a low-resolution camera (the 200 px chip shrunk to 40 px and back), grayscale,
heavy JPEG compression, and a zoomed-out frame (the chip in the middle of a frame twice its
side, the rest filled by reflecting the image, like an uncropped photo whose face the framer must
find again). Each copy is written as a CSV dataset (with UTKFace's gender and race) and scored
by one ``agemetric evaluate RUN --dataset csv --recalibrate SHARE`` command (printed): with the
run's intervals, and with intervals calibrated again on a share of the shifted faces.

Usage::

    python benchmarks/shift.py RUN_DIR --data-dir path/to/UTKFace --out runs/shift
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from agemetric.runs import RunFolder

RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}


def low_resolution(image: Image.Image) -> Image.Image:
    return image.resize((40, 40), Image.BILINEAR).resize(image.size, Image.BILINEAR)


def grayscale(image: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=10)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def zoomed_out(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image)
    pad = pixels.shape[0] // 2
    return Image.fromarray(np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))


SHIFTS = {
    "as is": None,
    "low resolution": low_resolution,
    "grayscale": grayscale,
    "JPEG quality 10": jpeg,
    "zoomed out": zoomed_out,
}


def write_shifted(name: str, change, keys: list[str], data_dir: Path, out: Path) -> Path:
    """The test faces changed by ``change``, with their labels, as ``out/<name>/labels.csv``."""
    folder = out / name.replace(" ", "-")
    folder.mkdir(parents=True, exist_ok=True)
    labels = folder / "labels.csv"
    if labels.is_file():
        return labels
    with (folder / "rows.tmp").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "age", "gender", "race"])
        for key in keys:
            age, gender, race = key.split("_")[:3]
            source = data_dir / key
            if change is None:
                path = str(source.resolve())
            else:
                path = key.replace(".jpg.chip.jpg", ".png")
                change(Image.open(source).convert("RGB")).save(folder / path)
            writer.writerow([path, age, "m" if gender == "0" else "f", RACES.get(race, "")])
    (folder / "rows.tmp").replace(labels)
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished UTKFace run with intervals (calibration > 0)")
    parser.add_argument("--data-dir", type=Path, required=True, help="the UTKFace folder")
    parser.add_argument("--out", type=Path, default=Path("runs/shift"))
    parser.add_argument("--recalibrate", type=float, default=0.2, help="share of each shifted set calibrating again")
    parser.add_argument("--shifts", default=",".join(SHIFTS), help="comma-separated, of: " + ", ".join(SHIFTS))
    args = parser.parse_args()

    keys = [key for key, side in RunFolder(args.run_dir).read_sides().items() if side == "test"]
    rows = []
    exe = str(Path(sys.executable).with_name("agemetric"))  # the agemetric beside this Python
    for name in args.shifts.split(","):
        labels = write_shifted(name, SHIFTS[name], keys, args.data_dir, args.out)
        result = args.out / f"{name.replace(' ', '-')}.json"
        command = ["agemetric", "evaluate", str(args.run_dir), "--dataset", "csv", "--data-dir", str(labels)]
        command += ["--set", 'dataset_options.groups=["race"]', "--recalibrate", str(args.recalibrate)]
        command += ["--out", str(result)]
        print("+", shlex.join(command), flush=True)
        subprocess.run([exe, *command[1:]], check=True, stdout=subprocess.DEVNULL)
        m = json.loads(result.read_text())
        again = m["recalibrated"]["intervals"]
        race = m.get("groups", {}).get("race", {}).get("largest_gap", {})
        rows.append(
            (
                name,
                m["mae"],
                m["intervals"]["coverage"],
                m["intervals"]["mean_width"],
                again["coverage"],
                again["mean_width"],
                m.get("framing_fallbacks", 0),
                race.get("mae", float("nan")),
            )
        )
    print(
        f"\n{len(keys)} test faces of {args.run_dir}; scored on {1 - args.recalibrate:.0%} of each set, "
        f"calibrated again on the other {args.recalibrate:.0%}"
    )
    print(
        "| faces | MAE | coverage (run's intervals) | width | coverage (calibrated again) | width | "
        "framer fallbacks | largest race gap |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, mae, cov, width, cov2, width2, fallbacks, gap in rows:
        print(
            f"| {name} | {mae:.2f} | {cov:.1f} % | {width:.1f} | {cov2:.1f} % | {width2:.1f} | {fallbacks} | {gap:.2f} |"
        )
    json.dump(rows, (args.out / "results.json").open("w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
