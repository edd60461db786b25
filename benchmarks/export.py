"""Export and inference: a run's bundles (TorchScript, ONNX Runtime) against the eager model, side by side.

For a run folder it

1. exports a TorchScript bundle and an ONNX bundle (``agemetric.export.export_bundle``, each timed,
   checkpoint loading included) and prints their files' sizes;
2. checks that the exported models give the eager float32 embeddings (max abs difference);
3. with ``--images``, compares the ages of those files from the run (as ``agemetric predict RUN_DIR``
   computes them: bf16 autocast where the CPU has it), from the eager model in float32, and from
   the two bundles;
4. measures images/s of the model alone (uint8 images -> age embedding; the kNN search is the same
   for all) at each batch size for

   - eager fp32: the exported module itself, run eagerly (eval mode, float32);
   - eager as run: ``AgeEstimator.embed`` as ``agemetric predict RUN_DIR`` runs it (bf16 autocast
     where the CPU supports it, channels-last as the run's config says);
   - TorchScript and ONNX Runtime: the bundles, through ``agemetric.bundle.Bundle``;

   alternating the four round by round so that they share the machine's noise, and prints the
   median images/s and the ratio to eager fp32. One thread each by default (``--threads``): on a
   shared 2-core machine two OpenMP threads wait on each other whenever another process runs.

Usage::

    python benchmarks/export.py runs/p3/utk-finetune --out /tmp/bundles/utk \\
        --images 'path/to/UTKFace/1*.jpg.chip.jpg' --limit 500
    python benchmarks/export.py runs/export/quick --out /tmp/bundles/quick --rounds 1 --seconds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from agemetric.bundle import Bundle
from agemetric.estimator import AgeEstimator
from agemetric.export import export_bundle


def size_mb(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_size / 1e6 for p in sorted(folder.iterdir())}


def rate(fn, images: np.ndarray, seconds: float) -> float:
    """Images/s of ``fn(images)`` called repeatedly for about ``seconds`` (after 3 warm-up calls:
    TorchScript's profiling executor optimises the graph on the second call)."""
    for _ in range(3):
        fn(images)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(images)
        calls += 1
    return calls * len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the two bundles (ts/ and onnx/)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per runtime, batch size and round")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads of torch and ONNX Runtime (1: steady on a shared machine)"
    )
    parser.add_argument("--images", help="glob of face images whose ages to compare (run against bundles)")
    parser.add_argument("--limit", type=int, default=500, help="at most this many --images (sorted)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) for torch and ONNX Runtime")
    bundles = {}
    for fmt, sub in (("torchscript", "ts"), ("onnx", "onnx")):
        start = time.perf_counter()
        export_bundle(args.run_dir, args.out / sub, fmt)
        seconds = time.perf_counter() - start
        files = ", ".join(f"{name} {mb:.2f} MB" for name, mb in size_mb(args.out / sub).items())
        print(f"export {fmt}: {seconds:.1f} s; {files}")
        bundles[fmt] = Bundle(args.out / sub, fmt, threads=args.threads)

    estimator = AgeEstimator.load(args.run_dir / "model.pt")
    fp32 = AgeEstimator.load(args.run_dir / "model.pt")  # the same model in float32 (with its flip, if any)
    fp32.spec = dataclasses.replace(fp32.spec, bf16="off")
    size = estimator.image_size
    print(f"run: {estimator.spec.backbone} {size} px, gallery {len(estimator.retriever)}, bf16 {estimator.bf16}")

    def eager_fp32(images: np.ndarray) -> np.ndarray:
        return fp32.embed(torch.from_numpy(images)).numpy()

    def eager_as_run(images: np.ndarray) -> np.ndarray:
        return estimator.embed(torch.from_numpy(images)).numpy()

    runtimes = {
        "eager fp32": eager_fp32,
        "eager as run": eager_as_run,
        "TorchScript": lambda images: bundles["torchscript"].embed(images)[0],
        "ONNX Runtime": lambda images: bundles["onnx"].embed(images)[0],
    }
    check = np.random.default_rng(0).integers(0, 256, (8, 3, size, size), dtype=np.uint8)
    reference = eager_fp32(check)
    scale = float(np.abs(reference).max())
    for name in ("eager as run", "TorchScript", "ONNX Runtime"):
        print(
            f"max |{name} - eager fp32| embedding: {np.abs(runtimes[name](check) - reference).max():.2e} (scale {scale:.2f})"
        )

    if args.images:
        files = sorted(glob.glob(args.images))[: args.limit]
        images = np.stack([bundles["torchscript"].read_image(f) for f in files])  # same framing as the run
        from_run = estimator.predict(torch.from_numpy(images)).numpy()
        from_fp32 = fp32.predict(torch.from_numpy(images)).numpy()
        print(f"ages of {len(files)} images (|difference| in years: max, mean):")
        for label, ages in (("eager fp32", from_fp32), *((f, b.predict(images)) for f, b in bundles.items())):
            for other_label, other in (("run", from_run), ("eager fp32", from_fp32)):
                if label != other_label:
                    diff = np.abs(ages - other)
                    print(f"  {label} vs {other_label}: {diff.max():.3f}, {diff.mean():.4f}")

    print(f"\nimages/s of the model (uint8 -> age embedding), median of {args.rounds} rounds of {args.seconds:g} s")
    print("| batch | " + " | ".join(runtimes) + " | TorchScript / eager fp32 | ONNX Runtime / eager fp32 |")
    print("|---" * (len(runtimes) + 3) + "|")
    for batch in (int(b) for b in args.batches.split(",")):
        images = np.random.default_rng(batch).integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
        rates = {name: [] for name in runtimes}
        for _ in range(args.rounds):
            for name, fn in runtimes.items():
                rates[name].append(rate(fn, images, args.seconds))
        med = {name: statistics.median(r) for name, r in rates.items()}
        cells = " | ".join(f"{med[name]:.1f}" for name in runtimes)
        base = med["eager fp32"]
        print(f"| {batch} | {cells} | {med['TorchScript'] / base:.2f} | {med['ONNX Runtime'] / base:.2f} |")


if __name__ == "__main__":
    main()
