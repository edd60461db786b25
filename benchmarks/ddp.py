"""Data-parallel training throughput: one process against ``torchrun --nproc_per_node N``, side by side.

Both train the same config (same global batch, so the same pairs) for ``--epochs`` epochs on
random uint8 images; each side is a fresh ``agemetric run`` whose ``history.json`` gives images/s
per epoch (the first epoch is a warm-up and not counted). One process gets all ``--threads``;
under torchrun each of the N processes gets ``threads / N``. The two alternate ``--repeat``
times and the medians are compared (ratio = N processes / one process).

On one CPU machine this measures the cost of the gather and the gradient all-reduce against
the gain of splitting the work between processes; on N GPUs it measures the scaling.

Usage::

    python benchmarks/ddp.py                                   # small_cnn, 64 px, batch 64, 2 processes
    python benchmarks/ddp.py --backbone inception_v3 --image-size 112 --batch-size 32 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

AGEMETRIC = ["-m", "agemetric"]


def one_run(nproc: int, threads: int, args, out: Path) -> float:
    """Median images/s of the epochs after the first."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(max(1, threads // nproc))
    launch = [sys.executable, *AGEMETRIC]
    if nproc > 1:
        launch = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *AGEMETRIC,
        ]
    cmd = [*launch, "run", "--dataset", "synthetic", "--backbone", args.backbone, "--weights", "none"]
    cmd += ["--limit", str(args.images), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    cmd += ["--epochs", str(args.epochs), "--out", str(out), "--set", f"threads={max(1, threads // nproc)}"]
    cmd += "--set figures=false --set bn_recalibration=0 --set test_fraction=0.05".split()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    history = json.loads((out / "history.json").read_text())
    return statistics.median(h["images_per_second"] for h in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=1400, help="images per epoch (about)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for nproc in rates:
                rates[nproc].append(one_run(nproc, args.threads, args, Path(tmp) / f"{nproc}-{r}"))
                print(f"repeat {r + 1}: {nproc} process(es): {rates[nproc][-1]:.1f} images/s", file=sys.stderr)
    single, multi = statistics.median(rates[1]), statistics.median(rates[args.nproc])
    print(f"| backbone | px | global batch | threads | 1 process img/s | {args.nproc} processes img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.backbone} | {args.image_size} | {args.batch_size} | {args.threads} | {single:.1f} | {multi:.1f} "
        f"| {multi / single:.2f} |"
    )


if __name__ == "__main__":
    main()
