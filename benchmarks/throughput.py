"""Training throughput: the bare backbone against agemetric's full training step, side by side.

For each image size, batch size and precision it measures, alternating the two to share the
machine's noise:

- **bare**: the backbone's forward + backward + optimiser step on a ready, normalised batch
  (loss = the sum of the embeddings), nothing else;
- **full**: :func:`agemetric.training.train` for one epoch: batch indexing from the uint8
  arrays, normalisation, augmentation, channels-last, forward, the all-pairs miner, the revised
  contrastive loss on the age and gender embeddings, backward and the optimiser step;

and prints images/s and the ratio full / bare (target >= 0.90). Then the peak memory of the
all-pairs loss (forward + backward) for B = 128, 512, 2048, agemetric's against a naive
``(P, D)`` pair-difference implementation, each in a fresh process.

Usage::

    python benchmarks/throughput.py                       # inception_v3, 112 and 227 px, batch 32 and 128
    python benchmarks/throughput.py --backbone small_cnn --sizes 64 --batches 32 --steps 3   # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from agemetric.config import resolve
from agemetric.data.arrays import FaceArrays
from agemetric.estimator import AgeEstimator
from agemetric.training import make_optimizer, train


def setup(backbone: str, size: int, batch: int, bf16: bool, steps: int, device: str = "cpu"):
    config = resolve(
        "paper",
        sets=[
            f"backbone={backbone}",
            "weights=none",
            f"image_size={size}",
            f"batch_size={batch}",
            "epochs=1",
            f"bf16={'on' if bf16 else 'off'}",
            "bn_recalibration=0",
            "multitask=on",
            f"device={device}",
        ],
    )
    torch.manual_seed(0)
    estimator = AgeEstimator.from_config(config, multitask=True).to(device)
    n = batch * steps
    g = torch.Generator().manual_seed(0)
    data = FaceArrays(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
        ages=torch.randint(1, 90, (n,), generator=g).float(),
        genders=torch.randint(0, 2, (n,), generator=g),
        keys=[str(i) for i in range(n)],
    )
    return config, estimator, data


def bare_rate(config, estimator, data, steps: int) -> float:
    """Images/s of forward + backward + optimiser step on prepared batches (after one warm-up step)."""
    backbone = estimator.backbone.train()
    if config.model.channels_last:
        backbone.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(backbone.parameters(), config.training)
    x = estimator.prepare(data.images[: config.training.batch_size])  # normalised, channels-last, not augmented

    def step():
        with estimator.autocast():
            out = backbone(x)
        loss = out.age.float().sum() + (out.gender.float().sum() if out.gender is not None else 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    sync = torch.cuda.synchronize if estimator.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * config.training.batch_size / (time.perf_counter() - start)


def full_rate(config, estimator, data) -> float:
    """Images/s of agemetric's training loop over one epoch of ``data`` (after a one-batch warm-up)."""
    warm = FaceArrays(
        data.images[: config.training.batch_size],
        data.ages[: config.training.batch_size],
        data.genders[: config.training.batch_size],
        data.keys[: config.training.batch_size],
    )
    train(estimator, warm, config.training)
    return train(estimator, data, config.training)[0]["images_per_second"]


MEMORY_SCRIPT = """
import re, sys, torch
from agemetric import functional as F

def peak_mb():  # VmHWM: this process's peak resident memory (ru_maxrss would carry the parent's over exec)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

impl, b = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
x = torch.randn(b, 70, requires_grad=True)
ages = torch.randint(1, 90, (b,)).float()
pairs = F.all_pairs(b)
start = peak_mb()
if impl == "agemetric":
    d = F.pair_l1_distances(x, pairs.first, pairs.second)
else:  # naive: the (P, D) differences of every pair
    d = (x[pairs.first] - x[pairs.second]).abs().sum(1)
z = F.margin_similarity(ages, pairs.first, pairs.second, 4.0)
F.revised_contrastive_loss(d, z).backward()
print(peak_mb() - start)
"""


def peak_mb(impl: str, b: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, impl, str(b)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--sizes", default="112,227")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--repeat", type=int, default=2, help="alternating measurements of each (median)")
    parser.add_argument("--memory-batches", default="128,512,2048")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU, bf16 is CUDA autocast)")
    args = parser.parse_args()

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, backbone {args.backbone}")
    print(f"{'size':>5} {'batch':>6} {'precision':>9} {'bare img/s':>11} {'full img/s':>11} {'full/bare':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            for precision in args.precisions.split(","):
                config, estimator, data = setup(
                    args.backbone, size, batch, precision == "bf16", args.steps, args.device
                )
                bare, full = [], []
                for _ in range(args.repeat):  # alternate, so both see the same machine
                    bare.append(bare_rate(config, estimator, data, args.steps))
                    full.append(full_rate(config, estimator, data))
                b, f = statistics.median(bare), statistics.median(full)
                print(f"{size:>5} {batch:>6} {precision:>9} {b:>11.1f} {f:>11.1f} {f / b:>10.2f}", flush=True)

    print("\nall-pairs loss, forward + backward, D = 70, peak memory above the start (MB, fresh process each)")
    print(f"{'B':>6} {'pairs':>10} {'agemetric':>10} {'naive (P, D)':>13} {'naive/agemetric':>16}")
    for b in (int(b) for b in args.memory_batches.split(",")):
        ours, naive = peak_mb("agemetric", b), peak_mb("naive", b)
        ratio = f"{naive / ours:.1f}" if ours >= 1 else "-"  # below 1 MB the process had room already
        print(f"{b:>6} {b * (b - 1) // 2:>10,} {ours:>10.1f} {naive:>13.1f} {ratio:>16}")


if __name__ == "__main__":
    main()
