"""Levers of the face recipe, each measured on a validation split at an equal number of epochs.

The machine's throughput varies from run to run (200-320 images/s for the same run here), so the
levers are compared after the same number of epochs rather than the same minutes: with a fixed
seed a run is then the same computation whatever the machine's load. Each lever is one plain
``agemetric run --preset face`` command (printed), on a split that leaves the UTKFace hash test
images out altogether and validates on a fifth of the training images (the split file that
``benchmarks/time_to_accuracy.py --validation`` writes). Evaluation-only levers (flip test-time
augmentation, k) are read from a finished run's model without training again (``--evaluate``).

Usage::

    python benchmarks/levers.py --data-dir path/to/UTKFace --epochs 4 --out runs/levers
    python benchmarks/levers.py --data-dir path/to/UTKFace --evaluate runs/levers/baseline
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from time_to_accuracy import validation_split  # noqa: E402

#: where the levers start: the face preset before them (dropout 0.5 before the heads, no flip TTA,
#: no weight averaging, no auxiliary classifier, flip, shift and zoom only, k = 20), every training
#: face training (no calibration faces held out)
START = (
    "backbone_options.dropout=0.5 tta_flip=false weight_average=0 calibration=0 "
    "loss_options.classifier=0 augment_options.rotate=0 augment_options.jitter=0 k=20"
).split()
BALANCED = "loss_options.reduction=balanced"
#: name -> --set items on top of --preset face and START
LEVERS: dict[str, list[str]] = {
    "baseline": [],
    "dropout 0.1": ["backbone_options.dropout=0.1"],
    "balanced pairs": [BALANCED],
    "balanced + lr x3": [BALANCED, "lr=3e-4", "head_lr=3e-3"],
    "balanced + cosine": [BALANCED, "lr_schedule=cosine", "warmup=0.05"],
    "balanced + margin 2": [BALANCED, "margin=2"],
    "balanced + dropout 0.1": [BALANCED, "backbone_options.dropout=0.1"],
    "balanced + 80 px": [BALANCED, "image_size=80"],
    "balanced + no augmentation": [BALANCED, "augment=false"],
    "dropout 0": ["backbone_options.dropout=0"],
    "dropout 0.1 + no augmentation": ["backbone_options.dropout=0.1", "augment=false"],
    "dropout 0.1 + weight average 0.998": ["backbone_options.dropout=0.1", "weight_average=0.998"],
    "dropout 0.1 + weight average 0.995": ["backbone_options.dropout=0.1", "weight_average=0.995"],
    # an auxiliary age classifier on the embedding (the gender task's loss gets the same options)
    **{
        f"dropout 0.1 + weight average 0.998 + age classifier {w}": [
            "backbone_options.dropout=0.1",
            "weight_average=0.998",
            f"loss_options.classifier={w}",
        ]
        for w in (3, 10)
    },
}
#: the recipe with the age classifier (weight 3), and levers on top of it
CLASSIFIER = [*LEVERS["dropout 0.1 + weight average 0.998 + age classifier 3"]]
LEVERS |= {
    "classifier 3 + 80 px": [*CLASSIFIER, "image_size=80"],
    "classifier 3 + 96 px": [*CLASSIFIER, "image_size=96"],
    "classifier 3 + 128 px": [*CLASSIFIER, "image_size=128"],
    "classifier 3 + padding 0.4": [*CLASSIFIER, "framing_options.padding=0.4"],
    "classifier 3 + embedding 128": [*CLASSIFIER, "embedding_dim=128"],
    "classifier 3 + label sigma 2": [*CLASSIFIER, "loss_options.label_sigma=2"],
    "classifier 3 + batch 256": [*CLASSIFIER, "batch_size=256"],
    "classifier 3 + weight decay 1e-4": [*CLASSIFIER, "weight_decay=1e-4"],
    "classifier 3 + lr 5e-5": [*CLASSIFIER, "lr=5e-5"],
    "classifier 3 + margin 3": [*CLASSIFIER, "margin=3"],
    "classifier 3 + rotate 10 + jitter 0.2": [*CLASSIFIER, "augment_options.rotate=10", "augment_options.jitter=0.2"],
    "classifier 3 + rotate 15 + jitter 0.3 + shift 0.1 + zoom 0.15": [
        *CLASSIFIER,
        "augment_options.rotate=15",
        "augment_options.jitter=0.3",
        "augment_options.max_shift=0.1",
        "augment_options.scale=[0.85,1.15]",
    ],
    "classifier 3 + stronger shift and zoom": [
        *CLASSIFIER,
        "augment_options.max_shift=0.1",
        "augment_options.scale=[0.85,1.15]",
    ],
    "classifier 3 + cosine": [*CLASSIFIER, "lr_schedule=cosine", "warmup=0.05"],
}
#: both dlib networks side by side (agemetric-dlib's dlib-pair), each half scored on its own
PAIR = ["backbone=dlib-pair", "image_size=112", "embedding_dim=140", "gender_dim=20", "loss_options.parts=2"]
#: levers on top of the face preset as it ships (flip TTA, k = 50; every training face training,
#: as with START), without START's other pins
FACE_LEVERS: dict[str, list[str]] = {
    "face": [],
    "face + weight decay 1e-4": ["weight_decay=1e-4"],
    "face + cosine": ["lr_schedule=cosine", "warmup=0.05"],
    "face + lr 5e-5": ["lr=5e-5"],
    "face + batch 256": ["batch_size=256"],
    "face + embedding 128": ["embedding_dim=128"],
    "face + padding 0.1": ["framing_options.padding=0.1"],
    "face + padding 0.3": ["framing_options.padding=0.3"],
    "face + weight average 0.999": ["weight_average=0.999"],
    # training for other domains: rare ages (and groups) drawn more often, other photos' looks
    "face + balance ages": ["balance=ages"],
    "face + balance ages+groups": ["balance=ages+groups"],
    "face + style 0.25": ["augment_options.style=0.25"],
    # dlib's face recognition network instead of its age network (agemetric-dlib's dlib-resnet29)
    "face + resnet29 112 px": ["backbone=dlib-resnet29", "image_size=112"],
    "face + pair 112 px": ["backbone=dlib-pair", "image_size=112"],
    # the two networks each with their own heads (70-d age and 10-d gender halves) and losses
    "face + pair 112 px + parts 2": PAIR,
}
LEVERS |= FACE_LEVERS


def evaluation_levers(run_dir: Path, gallery_sizes: list[int] = ()) -> None:
    """MAE of a finished run's model on its own split with and without flip TTA, for k = 10 to 100
    (the gallery is embedded again each time; nothing is trained); with ``gallery_sizes``, with
    flip TTA from galleries of that many of the training faces."""
    import dataclasses

    import torch

    from agemetric import AgeEstimator
    from agemetric.data.loading import run_faces
    from agemetric.metrics import summarise

    estimator = AgeEstimator.load(run_dir / "model.pt")
    faces = run_faces(run_dir, ["train", "test"])
    train, held_out = faces["train"], faces["test"]
    ks = (10, 20, 30, 50, 100)
    print("| | " + " | ".join(f"k = {k}" for k in ks) + " |\n|---|" + "---|" * len(ks))
    if gallery_sizes:  # flip TTA, galleries of fewer faces (the mean over three random draws of each size)
        estimator.spec = dataclasses.replace(estimator.spec, tta_flip=True)
        gallery, queries = estimator.embed(train.images), estimator.embed(held_out.images)
        for n in gallery_sizes:
            maes = torch.zeros(len(ks))
            for draw in range(3):
                pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(draw))[:n]  # (n,)
                estimator.retriever.fit(gallery[pick], train.ages[pick])
                for i, k in enumerate(ks):
                    estimator.retriever.k = min(k, n)
                    maes[i] += summarise(estimator.retriever.predict(queries), held_out.ages, train.ages)["mae"] / 3
            print(f"| {n} gallery faces | " + " | ".join(f"{m:.3f}" for m in maes.tolist()) + " |", flush=True)
        return
    for flip in (False, True):
        estimator.spec = dataclasses.replace(estimator.spec, tta_flip=flip)
        estimator.fit_gallery(train)
        queries = estimator.embed(held_out.images)  # once per flip setting, not once per k
        cells = []
        for k in ks:
            estimator.retriever.k = k
            cells.append(f"{summarise(estimator.retriever.predict(queries), held_out.ages, train.ages)['mae']:.3f}")
        print(f"| {'flip TTA' if flip else 'no flip'} | " + " | ".join(cells) + " |", flush=True)


def _extremes(metrics: dict) -> dict:
    """MAE of the youngest (0-9) and of the oldest (60 and over) validation faces, and of the race
    group with the largest error."""
    bands = metrics["mae_by_age"]
    old = [b for age, b in bands.items() if int(age.split("-")[0]) >= 60]
    races = metrics.get("groups", {}).get("race", {}).get("groups", {})
    return {
        "under_10": bands["0-9"]["mae"],
        "over_60": sum(b["mae"] * b["n"] for b in old) / sum(b["n"] for b in old),
        **({"worst_race": max(g["mae"] for g in races.values())} if races else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (the validation split stays the same)")
    parser.add_argument(
        "--second-split", action="store_true", help="validate on another fifth of the training images (md5[16:24])"
    )
    parser.add_argument("--levers", default=",".join(LEVERS), help="comma list of lever names")
    parser.add_argument("--out", type=Path, default=Path("runs/levers"))
    parser.add_argument("--evaluate", type=Path, help="only the evaluation levers (flip TTA, k) of this run folder")
    parser.add_argument("--gallery-sizes", default="", help="with --evaluate: comma list of smaller gallery sizes")
    args = parser.parse_args()
    if args.evaluate:
        return evaluation_levers(args.evaluate, [int(n) for n in args.gallery_sizes.split(",") if n.strip()])
    split = validation_split(args.data_dir, args.out, second=args.second_split)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    exe = str(Path(sys.executable).with_name("agemetric"))
    for name in [n.strip() for n in args.levers.split(",") if n.strip()]:
        key = name if args.seed == 0 else f"{name} (seed {args.seed})"
        run_dir = args.out / key.replace(" + ", "+").replace(" ", "-").replace("(", "").replace(")", "")
        if key not in results:
            cmd = ["agemetric", "run", *"--preset face --dataset utkface --set figures=false".split()]
            cmd += ["--data-dir", str(args.data_dir), "--split-file", str(split), "--out", str(run_dir)]
            cmd += ["--epochs", str(args.epochs), "--seed", str(args.seed)]
            for item in (["calibration=0"] if name in FACE_LEVERS else START) + LEVERS[name]:
                cmd += ["--set", item]
            print("+", shlex.join(cmd), flush=True)
            subprocess.run([exe, *cmd[1:]], check=True, stdout=subprocess.DEVNULL)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            history = json.loads((run_dir / "history.json").read_text())
            results[key] = {
                "mae": metrics["mae"],
                "cs5": metrics["cs"]["5"],
                **_extremes(metrics),
                "images": metrics["training_images_seen"],
                "images_per_second": sum(h["images"] for h in history) / sum(h["seconds"] for h in history),
                "command": shlex.join(cmd),
            }
            results_file.write_text(json.dumps(results, indent=2))
        r = results[key]
        extremes = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in ("under_10", "over_60", "worst_race"))
        print(
            f"| {key} | {r['mae']:.3f} | {r['cs5']:.1f} | {extremes} | {r['images']} | {r['images_per_second']:.0f} |"
        )


if __name__ == "__main__":
    main()
