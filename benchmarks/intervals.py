"""How far a run's interval coverage is from its level by chance: the run's calibration and test
faces pooled and split again at random, many times, at the run's sizes.

The calibration and test faces of a run are exchangeable by construction (both drawn at random,
neither trained on nor in the gallery), so a coverage below the level on the run's own split is
either the draw or a difference between the two sides that should not be there. Re-drawing the
split many times gives the coverage's distribution over draws; the run's value is placed in it.
Both kinds of interval are measured: one quantile for all faces, and one per group of estimates
(the run's ``interval_groups``), beside constant-width intervals. A second table compares what
the width follows (the neighbours' age spread, their embedding distance, nothing) on the
calibration faces alone, so that a choice between them is made without the test faces.

Usage::

    python benchmarks/intervals.py RUN_DIR [--draws 500]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from agemetric.data.loading import run_faces
from agemetric.estimator import AgeEstimator
from agemetric.intervals import ConformalIntervals, interval_report
from agemetric.runs import RunFolder


def coverage(kind: dict, cal, test) -> tuple[float, float]:
    """(coverage %, mean width) of intervals calibrated on ``cal`` and applied to ``test``:
    each a ``(true, estimate, spread)`` triple."""
    intervals = ConformalIntervals.calibrate(*cal, **kind)
    report = interval_report(test[0], *intervals.bounds(test[1], test[2]))
    return report["coverage"], report["mean_width"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()

    folder = RunFolder(args.run_dir)
    config = folder.read_config()
    estimator = AgeEstimator.load(folder.require_model())
    faces = run_faces(folder.path, ["calibration", "test"])
    cal_data, test_data = faces["calibration"], faces["test"]
    faces, distances = [], []
    for side in (cal_data, test_data):
        emb = estimator.embed(side.images)
        faces.append((side.ages, estimator.retriever.predict(emb), estimator.retriever.spread(emb)))
        distances.append(estimator.retriever.search(emb)[0].mean(1))  # (N,) mean L1 distance to the k
    level, groups = config.evaluation.interval_level, config.evaluation.interval_groups
    kinds = {
        "one quantile": {"level": level},
        f"by group of estimates (up to {groups})": {"level": level, "groups": groups},
        "constant width": {"level": level, "normalised": False},
    }
    pooled = [torch.cat(parts) for parts in zip(*faces, strict=True)]
    n_cal, n = len(cal_data), len(cal_data) + len(test_data)
    print(f"{args.run_dir}: {n_cal} calibration / {len(test_data)} test faces, level {level:.0%}, {args.draws} draws")
    print(
        "| intervals | the run's split: coverage / width | re-drawn: mean coverage (sd) | share of draws below the run's |"
    )
    print("|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name, kind in kinds.items():
        run_cov, run_width = coverage(kind, *faces)
        drawn = []
        for _ in range(args.draws):
            order = torch.randperm(n, generator=g)
            cal = [part[order[:n_cal]] for part in pooled]
            test = [part[order[n_cal:]] for part in pooled]
            drawn.append(coverage(kind, cal, test)[0])
        covs = torch.tensor(drawn)
        below = 100 * float((covs < run_cov).double().mean())
        print(
            f"| {name} | {run_cov:.1f} % / {run_width:.1f} y | {covs.mean():.1f} % ({covs.std():.1f}) | {below:.0f} % |"
        )
    compare_difficulties(faces[0], distances[0], level, args.draws, g)


def compare_difficulties(cal, distance: torch.Tensor, level: float, draws: int, g: torch.Generator) -> None:
    """What the width is normalised by, compared on the calibration faces alone (a random half
    calibrates, the other half is scored, re-drawn): the neighbours' age spread, their mean
    embedding distance (in the spread's units: scaled to the same median), and none."""
    true, estimate, spread = cal
    scaled = distance * spread.median() / distance.median()
    difficulties = {
        "neighbours' age spread": spread,
        "mean distance to the neighbours": scaled,
        "spread x distance / median": spread * distance / distance.median(),
    }
    print(f"\nOn the {len(true)} calibration faces alone, halves re-drawn {draws} times (level {level:.0%}):")
    print("| width follows | mean coverage | mean width |")
    print("|---|---|---|")
    n, half = len(true), len(true) // 2
    for name, difficulty in [*difficulties.items(), ("nothing (constant width)", None)]:
        kind = {"level": level} if difficulty is not None else {"level": level, "normalised": False}
        d = spread if difficulty is None else difficulty
        results = []
        for _ in range(draws):
            order = torch.randperm(n, generator=g)
            a, b = order[:half], order[half:]
            results.append(coverage(kind, (true[a], estimate[a], d[a]), (true[b], estimate[b], d[b])))
        covs, widths = zip(*results, strict=True)
        print(f"| {name} | {sum(covs) / draws:.1f} % | {sum(widths) / draws:.2f} y |")


if __name__ == "__main__":
    sys.exit(main())
