"""Accuracy benchmark: agemetric's default method against baselines on real faces, same budget.

Every method runs as a plain ``agemetric run`` command (printed, so any row can be reproduced
alone) with the same backbone, ImageNet weights, image size, batch size, optimiser, split and
wall-clock training budget. Results go to ``docs/benchmarks.md`` between the markers
``<!-- accuracy:start -->`` and ``<!-- accuracy:end -->``.

Split: UTKFace's ``hash`` protocol: an image is a test image when ``int(md5(file bytes)[:8], 16)
% 5 == 0`` (identical files land together; anyone can recompute it).

Usage::

    python benchmarks/accuracy.py --data-dir path/to/UTKFace \\
        --weights path/to/mobilenet_v2-b0353104.pth --budget 360
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (description, extra options). Everything else is shared.
METHODS = {
    "agemetric": ("revised contrastive, all pairs, L1 kNN (k = 20), margin 4: the paper's method", []),
    "linear-probe": (
        "ridge regression on frozen ImageNet features (no fine-tuning)",
        ["--epochs", "0", "--retriever", "ridge", "--set", "backbone_options.head=none", "--multitask", "off"],
    ),
    "regression": (
        "direct L1 regression head",
        ["--loss", "l1-regression", "--miner", "batch", "--retriever", "direct", "--set", "embedding_dim=1"],
    ),
    "dex": (
        "DEX: 101-way classification + expected value",
        ["--loss", "dex", "--miner", "batch", "--retriever", "expectation", "--set", "embedding_dim=101"],
    ),
    "pml-contrastive": (
        "pytorch-metric-learning ContrastiveLoss (age-margin pairs), L1 kNN",
        ["--loss", "pml-contrastive"],
    ),
    "pml-triplet": ("pytorch-metric-learning TripletMarginLoss (age-margin pairs), L1 kNN", ["--loss", "pml-triplet"]),
}


def command(args, method: str, seed: int, out: Path) -> list[str]:
    base = ["agemetric", "run", *"--preset paper --dataset utkface --split hash --epochs 1000".split()]
    base += ["--data-dir", str(args.data_dir), "--backbone", args.backbone, "--weights", str(args.weights)]
    base += ["--image-size", str(args.image_size), "--seed", str(seed), "--out", str(out)]
    base += ["--set", f"time_budget={args.budget}", "--set", f"optimizer={args.optimizer}", "--set", f"lr={args.lr:g}"]
    for item in args.set:
        base += ["--set", item]
    if args.limit:
        base += ["--limit", str(args.limit)]
    return base + METHODS[method][1]


def run_one(args, method: str, seed: int) -> dict:
    out = args.out / f"{method}-seed{seed}"
    if (out / "metrics.json").exists():  # resume an interrupted benchmark
        return json.loads((out / "metrics.json").read_text())
    cmd = command(args, method, seed, out)
    print("+", shlex.join(cmd), flush=True)
    exe = [str(Path(sys.executable).with_name("agemetric")), *cmd[1:]]
    started = time.perf_counter()
    result = subprocess.run(exe, capture_output=True, text=True)  # paths are relative to the caller's folder
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
        raise SystemExit(f"{method} failed")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"  {method} seed {seed}: MAE {metrics['mae']:.2f} (mean predictor {metrics['mean_predictor_mae']:.2f})")
    return metrics


def table(args, results: dict[str, list[dict]]) -> str:
    lines = [
        "| method | MAE | CS(3) % | CS(5) % | training images seen | wall time | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        maes = [r["mae"] for r in runs]
        mae = f"{statistics.mean(maes):.2f}" + (
            f" ± {statistics.stdev(maes):.2f} ({len(maes)} seeds)" if len(maes) > 1 else ""
        )
        cs3 = statistics.mean(r["cs"]["3"] for r in runs)
        cs5 = statistics.mean(r["cs"]["5"] for r in runs)
        seen = statistics.mean(r["training_images_seen"] for r in runs)
        wall = statistics.mean(r["wall_seconds"] for r in runs)
        cmd = shlex.join(command(args, method, 0, Path("runs") / f"{method}"))
        lines.append(
            f"| **{method}**: {METHODS[method][0]} | {mae} | {cs3:.1f} | {cs5:.1f} | {seen:,.0f} | {wall / 60:.1f} min | `{cmd}` |"
        )
    first = next(iter(results.values()))[0]
    buckets = sorted(first["mae_by_age"], key=lambda b: int(b.split("-")[0]))
    lines += [
        "",
        "MAE per age bucket (first seed):",
        "",
        "| method | " + " | ".join(buckets) + " |",
        "|---|" + "---|" * len(buckets),
    ]
    for method, runs in results.items():
        row = [f"{runs[0]['mae_by_age'].get(b, {}).get('mae', float('nan')):.1f}" for b in buckets]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    counts = " | ".join(str(first["mae_by_age"][b]["n"]) for b in buckets)
    lines.append(f"| (test images) | {counts} |")
    split = first["split"]
    lines += [
        "",
        f"Test set: {split['n_test']:,} images, train: {split['n_train']:,} ({split['protocol']} split; "
        f"{split.get('groups_with_identical_images', 0)} groups of byte-identical images kept together, "
        f"{split.get('of_which_with_different_labels', 0)} of them with different labels). "
        f"Mean predictor MAE on this test set: **{first['mean_predictor_mae']:.2f}**.",
        f"Settings: backbone `{args.backbone}` with ImageNet weights, {args.image_size} px, batch 128, "
        f"{args.optimizer} (lr {args.lr:g}){''.join(', ' + item for item in args.set)}, multi-task gender head where the method trains, bfloat16 autocast, training budget "
        f"{args.budget:g} s per method (wall clock, then the gallery is embedded and the test set scored).",
        f"Machine: {platform.platform()}, {first['machine']['threads']} torch threads, torch {first['machine']['torch']}.",
        f"Reproduce the whole table: `python benchmarks/accuracy.py --data-dir {args.data_dir} --weights {args.weights} "
        f"--budget {args.budget:g} --image-size {args.image_size} --optimizer {args.optimizer} --lr {args.lr:g}"
        f"{''.join(' --set ' + item for item in args.set)} --seeds {args.seeds} --baseline-seeds {args.baseline_seeds}"
        f"{''.join(' --seeds-for ' + item for item in args.seeds_for)}"
        f"{'' if args.marker == 'accuracy' else f' --out runs/{args.marker} --marker {args.marker}'}`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the UTKFace folder")
    parser.add_argument("--weights", default="imagenet", help="'imagenet' or the torchvision checkpoint file")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--budget", type=float, default=360.0, help="training seconds per method")
    parser.add_argument("--optimizer", default="adam", help="the same optimiser for every method")
    parser.add_argument("--lr", type=float, default=1e-4, help="the same learning rate for every method")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every method (repeatable)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds for the main method")
    parser.add_argument("--baseline-seeds", type=int, default=1, help="seeds for the other methods")
    parser.add_argument(
        "--seeds-for",
        action="append",
        default=[],
        metavar="METHOD=N",
        help="seeds for one method, overriding the two options above (repeatable)",
    )
    parser.add_argument("--limit", type=int, default=None, help="use a subset (for a trial run)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "accuracy")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--marker", default="accuracy", help="write between <!-- MARKER:start/end --> in --doc")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    per_method = {name: int(n) for name, _, n in (item.partition("=") for item in args.seeds_for)}
    results = {}
    for method in args.methods.split(","):
        default = args.seeds if method == "agemetric" else args.baseline_seeds
        seeds = range(per_method.get(method, default))
        results[method] = [run_one(args, method, seed) for seed in seeds]
    text = table(args, results)
    print(text)
    if args.limit is None:
        doc = args.doc.read_text()
        start, end = f"<!-- {args.marker}:start -->", f"<!-- {args.marker}:end -->"
        if start not in doc:
            doc += f"\n{start}\n{end}\n"
        head, _, rest = doc.partition(start)
        _, _, tail = rest.partition(end)
        args.doc.write_text(f"{head}{start}\n{text}\n{end}{tail}")
        print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
