"""``agemetric predict`` framing on threads against framing processes, side by side.

Builds two folders of photos from a UTKFace folder: small face crops (the first ``--crops``
files, 200 x 200) and large photos (the first ``--large`` faces scaled to 700 px on a 2000 x 1500
background, JPEG quality 90, as a phone photo of one person), then times ``agemetric predict
MODEL FOLDER`` on each with ``--framing-processes 0`` and ``--framing-processes N``, one after
the other, and checks that both give the same answers (ages within 0.1 years). Run it alone on the machine.

Usage::

    python benchmarks/predict_framing.py runs/face-bundle path/to/UTKFace --processes 2
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def make_folders(utkface: Path, crops: int, large: int, tmp: Path) -> dict[str, Path]:
    files = sorted(p for p in utkface.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    small, big = tmp / "crops", tmp / "large"
    small.mkdir()
    big.mkdir()
    for file in files[:crops]:
        (small / file.name).symlink_to(file.resolve())
    for i, file in enumerate(files[:large]):
        canvas = Image.new("RGB", (2000, 1500), (90, 120, 100))
        canvas.paste(Image.open(file).convert("RGB").resize((700, 700)), (650, 300))
        canvas.save(big / f"{i:04d}.jpg", quality=90)
    return {f"{crops} face crops, 200 x 200": small, f"{large} photos, 2000 x 1500": big}


def predict(model: str, folder: Path, processes: int) -> tuple[float, str]:
    command = [str(Path(sys.executable).with_name("agemetric")), "predict", model, str(folder), "--csv"]
    began = time.perf_counter()
    done = subprocess.run([*command, "--framing-processes", str(processes)], capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"agemetric predict failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def same_answers(one: str, other: str) -> bool:
    """Whether two CSV outputs name the same photos, faces, boxes and notes, with ages at most 0.1
    years apart (beside framing processes the network runs on fewer threads, which may round an
    age the other way)."""

    def ages(text: str) -> dict[tuple, str]:
        keys = ("photo", "face", "left", "top", "right", "bottom", "note")
        return {tuple(row[k] for k in keys): row["age"] for row in csv.DictReader(io.StringIO(text))}

    def close(a: str, b: str) -> bool:
        return a == b or (a != "" and b != "" and abs(float(a) - float(b)) <= 0.11)

    first, second = ages(one), ages(other)
    return first.keys() == second.keys() and all(close(first[k], second[k]) for k in first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a run folder or bundle whose framing is a face detector (dlib-align)")
    parser.add_argument("utkface", type=Path, help="the UTKFace folder (aligned 200 x 200 crops)")
    parser.add_argument("--processes", type=int, default=2, help="framing processes to compare with threads")
    parser.add_argument("--crops", type=int, default=600, help="how many face crops")
    parser.add_argument("--large", type=int, default=120, help="how many large photos")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_folders(args.utkface, args.crops, args.large, Path(tmp))
        print(f"| photos | threads | {args.processes} processes | processes / threads | same answers |")
        print("|---|---|---|---|---|")
        for label, folder in folders.items():
            threads, by_threads = predict(args.model, folder, 0)
            processes, by_processes = predict(args.model, folder, args.processes)
            same = "yes" if same_answers(by_threads, by_processes) else "NO"
            print(f"| {label} | {threads:.1f} s | {processes:.1f} s | {processes / threads:.2f} | {same} |")


if __name__ == "__main__":
    main()
