"""Input pipeline against training consumption, measured side by side in one run.

Prints images/s for: decoding JPEGs (with resizing, 2 threads), reading the decoded cache, the
per-batch tensor pipeline (index, normalise, augment, channels-last), and one training step of the
backbone (forward + backward + optimiser, bf16 autocast where supported), then the ratios of
each input stage to the training step. A ratio above 1 means the stage keeps up with training.

Usage::

    python benchmarks/input.py --data-dir path/to/UTKFace --n 2000 --size 128
    python benchmarks/input.py            # synthetic faces, no data needed
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from agemetric import plugins
from agemetric.config import resolve
from agemetric.data.arrays import decode
from agemetric.estimator import AgeEstimator


def rate(n: int, fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="a UTKFace folder (default: synthetic faces)")
    parser.add_argument("--n", type=int, default=1000, help="images to decode")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    if args.data_dir:
        dataset = plugins.create("dataset", "utkface", root=args.data_dir)
    else:
        dataset = plugins.create("dataset", "synthetic", n=args.n)
    records = dataset.records()[: args.n]
    n = len(records)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["AGEMETRIC_CACHE"] = cache
        decode_ips = rate(n, lambda: decode(dataset, records, args.size, cache=True))  # miss: decodes and stores
        cached_ips = rate(n, lambda: decode(dataset, records, args.size, cache=True), repeat=3)  # hit
        data = decode(dataset, records, args.size, cache=True)

    config = resolve("paper", sets=[f"backbone={args.backbone}", "weights=none", f"image_size={args.size}"])
    estimator = AgeEstimator.from_config(config, multitask=True).to(memory_format=torch.channels_last)
    estimator.train()
    generator = torch.Generator().manual_seed(0)
    b = min(args.batch_size, n)
    index = torch.randperm(n, generator=generator)[:b]

    def pipeline():
        for _ in range(5):
            estimator.prepare(data.images[index], generator)

    optimizer = torch.optim.Adadelta(estimator.parameters())
    x = estimator.prepare(data.images[index], generator)

    def step():
        parts = estimator.training_loss(x, data.ages[index], data.genders[index])
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()

    step()  # warm-up
    pipeline_ips = rate(5 * b, pipeline, repeat=3)
    train_ips = rate(b, step, repeat=3)
    print(
        f"{dataset.describe()}: {n} images at {args.size} px, backbone {args.backbone}, batch {b}, "
        f"bf16 {'on' if estimator.bf16 else 'off'}, {torch.get_num_threads()} threads"
    )
    print(f"{'stage':<34}{'images/s':>10}{'ratio to training':>20}")
    for name, ips in [
        ("decode JPEG + resize (2 threads)", decode_ips),
        ("read decoded cache", cached_ips),
        ("tensor pipeline (normalise+augment)", pipeline_ips),
        ("training step (fwd+bwd+optimiser)", train_ips),
    ]:
        print(f"{name:<34}{ips:>10.0f}{ips / train_ips:>20.2f}")


if __name__ == "__main__":
    main()
