"""Adapting to a domain the training never saw, with a few labelled faces of it, on protocols
built from UTKFace (the only faces at hand here).

Two protocols (``--protocol``), each a face-preset model trained on part of UTKFace and used on
domains it never saw:

- ``race`` (default): trained *without* UTKFace's Asian faces (race 2). Domains: ``asian``, the
  Asian faces (people the training never saw), and ``old scans``, the model's own test faces made
  to look like old scanned prints (grayscale, sepia, a blurred 64 px copy, grain, JPEG quality
  30): a photo style it never saw.
- ``ages``: trained on the faces aged 10 to 59 only. Domains: ``under 10`` and ``60 and over``,
  ages the gallery does not hold at all.

For each domain and each number ``n`` of labelled faces, ``--draws`` random draws of ``n`` faces
adapt the model (`agemetric.adaptation.choose`, as ``agemetric adapt`` does; the model's own
embeddings, so the network runs once per face) and every other face of the domain scores it:
MAE, bias (mean signed error) and the 90 % intervals' coverage before and after. The decision and
its cross-validated estimate come from the ``n`` faces alone; the scores from the rest.

Usage::

    python benchmarks/adapt.py --data-dir path/to/UTKFace --out runs/adapt
    python benchmarks/adapt.py --data-dir path/to/UTKFace --protocol ages --out runs/adapt-ages

(trains the model first when ``--out`` holds none: ``agemetric run --preset face`` on a CSV of
the other faces, about 5 minutes on a 2-core CPU with bfloat16).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from agemetric.adaptation import GalleryArrays, adapt
from agemetric.config import RunConfig
from agemetric.data.loading import load_data
from agemetric.estimates import age_spread, interval, mean_age
from agemetric.estimator import AgeEstimator
from agemetric.runs import RunFolder

RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "others"}


def utkface_rows(data_dir: Path) -> list[dict]:
    """Every well-named UTKFace file: ``{path, age, gender, race}``."""
    rows = []
    for path in sorted(data_dir.glob("*.jpg.chip.jpg")):
        parts = path.name.split("_")
        if len(parts) >= 4 and parts[0].isdigit() and parts[1] in "01" and parts[2] in RACES:
            rows.append({"path": str(path.resolve()), "age": parts[0], "gender": parts[1], "race": RACES[parts[2]]})
    return rows


def write_csv(rows: list[dict], file: Path) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "age", "gender"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return file


def old_scan(image: Image.Image, seed: int) -> Image.Image:
    """A face as an old scanned print: grayscale toned sepia, detail lost to a 64 px copy and a
    blur, film grain, heavy JPEG."""
    gray = ImageOps.grayscale(image)
    sepia = ImageOps.colorize(gray, black=(40, 26, 13), white=(255, 240, 205))
    small = (
        sepia.resize((64, 64), Image.BILINEAR).resize(image.size, Image.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    )
    pixels = np.asarray(small, dtype=np.float32)
    grain = np.random.default_rng(seed).normal(0, 8, pixels.shape[:2])[..., None]
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))


def train_model(rows: list[dict], out: Path, sets: list[str]) -> Path:
    """The face preset trained on ``rows`` (a CSV dataset) with ``--set`` ``sets``, unless ``out``
    holds it already."""
    run = out / "run"
    if not (run / "model.pt").exists():
        labels = write_csv(rows, out / "train.csv")
        command = [
            str(Path(sys.executable).with_name("agemetric")),
            "run",
            "--preset",
            "face",
            "--dataset",
            "csv",
            "--data-dir",
            str(labels),
            "--out",
            str(run),
            "--seed",
            "0",
            *(a for s in sets for a in ("--set", s)),
        ]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return run


def embed_domain(estimator: AgeEstimator, base: RunConfig, rows: list[dict], file: Path):
    """The domain's faces framed as the run frames them and embedded: ``(embeddings, ages)``."""
    config = base.replace(dataset="csv", data_dir=str(write_csv(rows, file)), dataset_options={})
    _, data = load_data(config)
    return estimator.embed(data.images).numpy(), data.ages.numpy().astype(np.float64)


def scores(gallery: GalleryArrays, k: int, intervals: dict, emb: np.ndarray, ages: np.ndarray) -> dict:
    """MAE, bias and interval coverage and width of ``gallery`` at ``k`` on ``(emb, ages)``."""
    _, idx = faiss.knn(np.ascontiguousarray(emb, np.float32), gallery.embeddings, k, metric=faiss.METRIC_L1)
    neighbour_ages = gallery.ages[idx].astype(np.float64)
    weights = None if gallery.weights is None else gallery.weights[idx]
    estimate, spread = mean_age(neighbour_ages, weights), age_spread(neighbour_ages, weights)
    low, high = interval(estimate, spread, intervals)
    return {
        "mae": float(np.abs(estimate - ages).mean()),
        "bias": float((estimate - ages).mean()),
        "coverage": float(((low <= ages) & (ages <= high)).mean()),
        "width": float((high - low).mean()),
    }


def run_domain(name: str, estimator: AgeEstimator, emb: np.ndarray, ages: np.ndarray, sizes, draws: int) -> list[dict]:
    g = estimator.retriever.gallery
    train = GalleryArrays(g.embeddings.numpy(), g.ages.numpy(), None if g.genders is None else g.genders.numpy())
    intervals, k = estimator.intervals.to_dict(), estimator.retriever.k
    rows = []
    for n in sizes:
        for draw in range(draws):
            rng = np.random.default_rng(1000 * n + draw)
            pick = rng.choice(len(ages), size=n, replace=False)
            rest = np.setdiff1d(np.arange(len(ages)), pick)
            report, new = adapt(train, GalleryArrays(emb[pick], ages[pick].astype(np.float32)), k, intervals, draw)
            row = {
                "domain": name,
                "n": n,
                "draw": draw,
                "chosen": str(report.chosen),
                "adapted": report.adapted,
                "cv_mae_before": report.mae_before,
                "cv_mae_after": report.mae_after,
                "before": scores(train, k, intervals, emb[rest], ages[rest]),
                "after": scores(new, report.chosen.k, report.intervals, emb[rest], ages[rest]),
            }
            rows.append(row)
            b, a = row["before"], row["after"]
            print(
                f"{name:10s} n={n:4d} draw {draw}: MAE {b['mae']:.2f} -> {a['mae']:.2f}, bias {b['bias']:+.2f} -> "
                f"{a['bias']:+.2f}, coverage {100 * b['coverage']:.1f} -> {100 * a['coverage']:.1f} % ({row['chosen']})",
                flush=True,
            )
    return rows


#: the table's fields, each before and after: (name in `scores()`, scale)
FIELDS = (("mae", 1.0), ("bias", 1.0), ("coverage", 100.0))


def _stat(group: list[dict], side: str, field: str, scale: float) -> str:
    """The mean over draws, with the standard deviation in brackets."""
    values = np.array([r[side][field] for r in group]) * scale
    return f"{values.mean():.2f} ({values.std(ddof=1) if len(values) > 1 else 0:.2f})"


def summary(rows: list[dict]) -> str:
    """A Markdown table: per domain and n, the mean (and sd) over draws."""
    lines = [
        "| domain | labelled faces | MAE before | MAE after | bias before | bias after | 90 % coverage before | after | adapted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["domain"], r["n"]) for r in rows}, key=lambda t: (t[0], t[1]))
    for domain, n in keys:
        group = [r for r in rows if r["domain"] == domain and r["n"] == n]
        cells = [_stat(group, side, field, scale) for field, scale in FIELDS for side in ("before", "after")]
        lines.append(f"| {domain} | {n} | {' | '.join(cells)} | {sum(r['adapted'] for r in group)} of {len(group)} |")
    return "\n".join(lines)


def domains(rows: list[dict], protocol: str) -> tuple[list[dict], dict[str, list[dict]]]:
    """``protocol``'s training faces and its held-out domains (name -> faces)."""
    if protocol == "race":
        return [r for r in rows if r["race"] != "asian"], {"asian": [r for r in rows if r["race"] == "asian"]}
    return [r for r in rows if 10 <= int(r["age"]) < 60], {
        "under 10": [r for r in rows if int(r["age"]) < 10],
        "60 and over": [r for r in rows if int(r["age"]) >= 60],
    }


def old_scans(rows: list[dict], folder: RunFolder, out: Path) -> list[dict]:
    """The run's test faces among ``rows``, written to ``out`` as old scans (`old_scan()`)."""
    test = {key for key, side in folder.read_sides().items() if side == "test"}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    scanned = []
    for i, row in enumerate(r for r in rows if r["path"] in test):
        path = (out / f"{i}.jpg").resolve()
        old_scan(Image.open(row["path"]).convert("RGB"), seed=i).save(path, quality=30)
        scanned.append({**row, "path": str(path)})
    return scanned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the UTKFace folder")
    parser.add_argument("--protocol", choices=("race", "ages"), default="race", help="see the module docstring")
    parser.add_argument("--out", type=Path, default=Path("runs/adapt"))
    parser.add_argument("--sizes", default="20,50,200", help="numbers of labelled faces, comma-separated")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the labelled faces per size")
    parser.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the training run (repeatable), e.g. augment_options.style=0.5",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    train_rows, held_out = domains(utkface_rows(args.data_dir), args.protocol)
    run = train_model(train_rows, args.out, args.train_set)
    folder = RunFolder(run)
    estimator = AgeEstimator.load(folder.model)
    base = folder.read_config()
    if args.protocol == "race":
        held_out["old scans"] = old_scans(train_rows, folder, args.out / "old-scans")
    results = []
    for name, faces in held_out.items():
        emb, ages = embed_domain(estimator, base, faces, args.out / f"{name.replace(' ', '-')}.csv")
        results += run_domain(name, estimator, emb, ages, sizes, args.draws)

    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = summary(results)
    (args.out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    sys.exit(main())
