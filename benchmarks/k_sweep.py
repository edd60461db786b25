"""How the estimate depends on the retriever, for one trained run (no retraining).

Loads a run folder, re-embeds its test images (from its ``split.csv``), and prints the MAE of the
kNN estimate for several k, of the distance-weighted kNN, and of ridge regression on the same
embedding, side by side. Tells whether a weak result comes from the embedding or from the estimate.

Usage::

    python benchmarks/k_sweep.py runs/accuracy/agemetric-seed0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agemetric import plugins
from agemetric.data.loading import run_faces
from agemetric.estimator import AgeEstimator
from agemetric.metrics import mae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--ks", default="1,5,10,20,30,50")
    args = parser.parse_args()
    estimator = AgeEstimator.load(args.run_dir / "model.pt")
    data = run_faces(args.run_dir, ["test"])["test"]
    queries = estimator.embed(data.images)
    gallery = estimator.retriever
    print(f"{args.run_dir}: {len(data)} test images, gallery {len(gallery)}")
    print(f"{'estimate':<28}{'MAE':>8}")
    dist, idx = gallery.search(queries, k=max(int(k) for k in args.ks.split(",")))
    for k in (int(k) for k in args.ks.split(",")):
        print(f"{f'mean of {k} nearest':<28}{mae(gallery.ages[idx[:, :k]].mean(1), data.ages):>8.2f}")
        w = 1.0 / (dist[:, :k] + 1e-6)  # (M, k)
        weighted = (gallery.ages[idx[:, :k]] * w).sum(1) / w.sum(1)
        print(f"{f'1/d-weighted {k} nearest':<28}{mae(weighted, data.ages):>8.2f}")
    ridge = plugins.create("retriever", "ridge").fit(gallery.embeddings, gallery.ages)
    print(f"{'ridge on the embedding':<28}{mae(ridge.predict(queries), data.ages):>8.2f}")


if __name__ == "__main__":
    main()
