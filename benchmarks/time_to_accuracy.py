"""Time to accuracy: MAE on UTKFace against minutes of CPU training, per method, from one run each.

Each (method, seed) is one ``agemetric.run`` in a fresh process with a training budget of the
last mark; the test split is evaluated at every mark (2, 5, 10, 20, 30 minutes by default) on a
copy of the model, and that evaluation is left out of the training clock. The learning-rate
schedule is the method's own (constant after warm-up for every method here), so an early mark is
what the same run had reached by then, not a run tuned to stop there.

Split: UTKFace's ``hash`` protocol (test iff ``int(md5(file)[:8], 16) % 5 == 0``). With
``--validation`` the hash test images are left out altogether and a validation fifth of the
training images takes their place (``int(md5[8:16], 16) % 5 == 0``): settings are chosen there,
never on the test split.

Usage::

    python benchmarks/time_to_accuracy.py --data-dir path/to/UTKFace \\
        --mobilenet-weights path/to/mobilenet_v2-b0353104.pth \\
        --methods agemetric-dlib,dex-dlib,pml-triplet-dlib,agemetric-mobilenet --seeds 0 \\
        --out runs/tta --figure docs/img/utkface/time_to_accuracy.png

Results are printed as a Markdown table (rows: methods; columns: minutes) and kept in
``OUT/results.json``; a finished (method, seed) is not rerun.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

#: name -> (description, preset, --set items); every method also gets the shared settings
METHODS: dict[str, tuple[str, str, list[str]]] = {
    "agemetric-dlib": (
        "the paper's method (revised contrastive, all pairs, L1 20-NN) on dlib's face ResNet-10",
        "face",
        [],
    ),
    "agemetric-dlib-pair": (
        "the face-pair preset: dlib's age and face recognition networks side by side, each half of the embedding on its own",
        "face-pair",
        [],
    ),
    "dex-dlib": (
        "DEX (101-way classification, expected value) on dlib's face ResNet-10",
        "face",
        ["loss=dex", "miner=batch", "retriever=expectation", "embedding_dim=101", "multitask=off"],
    ),
    "pml-triplet-dlib": (
        "pytorch-metric-learning TripletMarginLoss (age-margin pairs), L1 20-NN, on dlib's face ResNet-10",
        "face",
        ["loss=pml-triplet"],
    ),
    "agemetric-mobilenet": (
        "the paper's method on ImageNet MobileNetV2 at 128 px (the finetune preset), dlib-aligned faces",
        "finetune",
        ["backbone=mobilenet_v2", "image_size=128", "framing=dlib-align"],
    ),
}


def validation_split(data_dir: Path, out: Path, second: bool = False) -> Path:
    """A split.csv without the hash test images, a fifth of the rest as the (validation) test side:
    ``int(md5[8:16], 16) % 5 == 0``, or with ``second`` another fifth, ``int(md5[16:24], 16) % 5 == 0``."""
    digits = slice(16, 24) if second else slice(8, 16)
    from agemetric import create

    dataset = create("dataset", "utkface", root=data_dir)
    rows = []
    for record in dataset.records():
        digest = hashlib.md5(dataset.file(record).read_bytes()).hexdigest()
        if int(digest[:8], 16) % 5 == 0:
            continue  # the hash split's test image: never seen while choosing settings
        rows.append((record.key, "test" if int(digest[digits], 16) % 5 == 0 else "train"))
    path = out / ("second-validation-split.csv" if second else "validation-split.csv")
    out.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([("key", "side"), *rows])
    return path


def run_one(args) -> None:
    """In the child process: one method, one seed -> OUT/METHOD-seedS/metrics.json."""
    import agemetric

    _, preset, sets = METHODS[args.one]
    marks = [60 * m for m in args.minutes]
    # every training face trains (no calibration faces held out): the recipes compete on equal data
    sets = [
        *sets,
        f"time_budget={marks[-1]}",
        "epochs=1000",
        f"seed={args.seed}",
        "figures=false",
        "calibration=0",
        *args.set,
    ]
    options = {"dataset": "utkface", "data_dir": str(args.data_dir), "out": str(args.run_dir)}
    options["split_file" if args.split_file else "split"] = str(args.split_file) if args.split_file else "hash"
    if "mobilenet" in args.one:
        options["weights"] = str(args.mobilenet_weights)
    config = agemetric.resolve(preset, options=options, sets=sets)
    if any(item.startswith("loss=") for item in METHODS[args.one][2]):  # another loss: not the preset's options
        config = config.replace(loss_options={})
    agemetric.run(config, snapshots=tuple(marks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--mobilenet-weights", type=Path, help="torchvision's ImageNet MobileNetV2 file")
    parser.add_argument("--methods", default="agemetric-dlib", help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--seeds", default="0", help="comma list")
    parser.add_argument("--minutes", default="2,5,10,20,30", help="marks, minutes of training")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every method (repeatable)")
    parser.add_argument("--validation", action="store_true", help="validation fifth of the training split")
    parser.add_argument("--out", type=Path, default=Path("runs/time-to-accuracy"))
    parser.add_argument("--figure", type=Path, help="write MAE against minutes here (PNG)")
    parser.add_argument(
        "--reference", action="append", default=[], help="LABEL=MAE: a horizontal line on the figure (repeatable)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--split-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.minutes = [float(m) for m in args.minutes.split(",")]
    if args.one:
        return run_one(args)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if any("mobilenet" in m for m in methods) and not args.mobilenet_weights:
        parser.error("agemetric-mobilenet needs --mobilenet-weights")
    split_file = validation_split(args.data_dir, args.out) if args.validation else None
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for method in methods:
        for seed in (int(s) for s in args.seeds.split(",")):
            name = f"{method}-seed{seed}"
            run_dir = args.out / name
            if name in results:
                continue
            cmd = [sys.executable, __file__, "--one", method, "--seed", str(seed), "--run-dir", str(run_dir)]
            cmd += ["--data-dir", str(args.data_dir), "--minutes", ",".join(f"{m:g}" for m in args.minutes)]
            if args.mobilenet_weights:
                cmd += ["--mobilenet-weights", str(args.mobilenet_weights)]
            if split_file:
                cmd += ["--split-file", str(split_file)]
            for item in args.set:
                cmd += ["--set", item]
            print("+", shlex.join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            history = json.loads((run_dir / "history.json").read_text())  # its seconds leave the snapshots out
            results[name] = {
                "method": method,
                "seed": seed,
                "snapshots": metrics["snapshots"],
                "final_mae": metrics["mae"],
                "images_per_second": sum(h["images"] for h in history) / sum(h["seconds"] for h in history),
            }
            results_file.write_text(json.dumps(results, indent=2))
    print_table(results, methods, args.minutes)
    if args.figure:
        plot(results, methods, args.figure, [r.rpartition("=")[::2] for r in args.reference])


def _curves(results: dict, method: str) -> list[dict[float, float]]:
    return [{s["mark"] / 60: s["mae"] for s in r["snapshots"]} for r in results.values() if r["method"] == method]


def print_table(results: dict, methods: list[str], minutes: list[float]) -> None:
    print("| method | seeds | " + " | ".join(f"{m:g} min" for m in minutes) + " | images/s |")
    print("|---|---|" + "---|" * (len(minutes) + 1))
    for method in methods:
        curves = _curves(results, method)
        if not curves:
            continue
        cells = []
        for m in minutes:
            values = [c[m] for c in curves if m in c]
            cells.append(
                ""
                if not values
                else f"{statistics.mean(values):.2f}"
                + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
            )
        ips = statistics.mean(r["images_per_second"] for r in results.values() if r["method"] == method)
        print(f"| {method} | {len(curves)} | " + " | ".join(cells) + f" | {ips:.0f} |")


def plot(results: dict, methods: list[str], path: Path, references: list[tuple[str, str]] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in methods:
        curves = _curves(results, method)
        if not curves:
            continue
        xs = sorted(set().union(*curves))
        ys = [statistics.mean(c[x] for c in curves if x in c) for x in xs]
        ax.plot(xs, ys, marker="o", label=f"{method} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
    for (label, value), style in zip(references, ("--", ":", "-."), strict=False):
        ax.axhline(float(value), color="grey", linestyle=style, linewidth=1, label=f"{label} ({float(value):.2f})")
    ax.set_xlabel("minutes of training (2 CPU cores)")
    ax.set_ylabel("MAE on the UTKFace hash test split (years)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
