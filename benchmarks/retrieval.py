"""Retrieval for large galleries: agemetric's ``l1-knn`` against bare faiss, side by side.

Synthetic galleries of ``--sizes`` x ``--dim`` float32 embeddings ("embedding-like": a
``--latent-dim`` dimensional factor model whose first factor is the age, plus noise; 0 gives
i.i.d. Gaussian vectors), ``--queries`` queries from the same model, k = 20. For each size:

- **exact**: ``L1KNN(k).fit(gallery).search(queries)`` against faiss ``IndexFlat(D, METRIC_L1)``
  (``add`` + ``search``), alternated ``--repeat`` times, median wall time of each and the ratio
  agemetric / faiss; the two answers' distances are checked to agree;
- **hnsw** (sizes up to ``--hnsw-max``): ``L1KNN(k, index="hnsw")`` against faiss
  ``IndexHNSWFlat(D, M, METRIC_L1)`` built and searched directly with the same M,
  efConstruction and efSearch (one build each), the search times of agemetric and of faiss's
  own ``search`` on agemetric's index (alternated ``--repeat`` times), and the recall@20 of both
  builds against the exact answer.

Every case runs in a fresh process that loads the arrays from files, then reports its times and
its **peak memory**: the peak resident memory (``VmHWM``) above the process's size once the data
is loaded (the peak is reset there through ``/proc/self/clear_refs``).

With ``--run DIR`` (a finished run with ``model.pt`` and ``split.csv``): the run's real gallery
and test-set embeddings (embedded once and cached in ``--cache``, default ``DIR/test_embeddings.pt``):
the same exact / HNSW comparison, then the MAE and search time of reference selection
(``references="per-age"``) against the whole gallery.

Usage::

    python benchmarks/retrieval.py                                       # 19k, 200k, 1M x 128
    python benchmarks/retrieval.py --sizes 1000 --hnsw-max 1000 --repeat 1   # a smoke run
    python benchmarks/retrieval.py --run runs/p3/utk-finetune --data-dir path/to/UTKFace   # + real embeddings
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from agemetric.default_plugins.l1_knn import L1KNN
from agemetric.metrics import mae

K = 20
CASES = ("agemetric-flat", "faiss-flat", "agemetric-hnsw", "faiss-hnsw")


def synthetic(n: int, dim: int, latent: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` float32 embeddings and ``(n,)`` ages 1-80, filled block by block (no temporary copy)."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(12345).standard_normal((max(latent, 1), dim), dtype=np.float32)  # same for all seeds
    out = np.empty((n, dim), dtype=np.float32)
    ages = rng.integers(1, 81, n).astype(np.float32)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        if latent == 0:
            out[start : start + m] = rng.standard_normal((m, dim), dtype=np.float32)
            continue
        z = rng.standard_normal((m, latent), dtype=np.float32)  # (m, latent)
        z[:, 0] = ages[start : start + m] / 20 - 2  # the first factor is the age
        out[start : start + m] = z @ mix / np.sqrt(latent) + 0.1 * rng.standard_normal((m, dim), dtype=np.float32)
    return out, ages


def timed(fn):
    """``(seconds, fn())``."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (M, k) that ``found`` (M, k) contains."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist(), strict=True)]))


# -- one case in a fresh process: build, search, peak memory ----------------------------------------


def status_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of this process in MB (ru_maxrss would carry the parent's peak over exec)."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def builders(gallery: np.ndarray, ages: np.ndarray):
    """case -> ``build()`` returning ``(search, bare)``: ``search(queries) -> (distances, indices)``, and
    for agemetric's HNSW the same faiss index searched directly (else ``None``); HNSW with l1-knn's defaults.
    """
    options = L1KNN(index="hnsw").options
    hnsw_params = faiss.SearchParametersHNSW(efSearch=max(options.ef_search, K))

    def agemetric(index: str):
        r = L1KNN(k=K, index=index).fit(torch.from_numpy(gallery), torch.from_numpy(ages))
        same = r._hnsw  # the retriever's own faiss index (benchmark only: a private attribute)
        bare = None if same is None else lambda q: same.search(q, K, params=hnsw_params)
        return (lambda q: tuple(t.numpy() for t in r.search(torch.from_numpy(q)))), bare

    def faiss_flat():
        index = faiss.IndexFlat(gallery.shape[1], faiss.METRIC_L1)
        index.add(gallery)
        return (lambda q: index.search(q, K)), None

    def faiss_hnsw():
        index = faiss.IndexHNSWFlat(gallery.shape[1], options.hnsw_m, faiss.METRIC_L1)
        index.hnsw.efConstruction = options.ef_construction
        index.add(gallery)
        return (lambda q: index.search(q, K, params=hnsw_params)), None

    return {
        "agemetric-flat": lambda: agemetric("flat"),
        "faiss-flat": faiss_flat,
        "agemetric-hnsw": lambda: agemetric("hnsw"),
        "faiss-hnsw": faiss_hnsw,
    }


def run_case(case: str, data: Path, searches: int) -> dict:
    """Build once and search ``searches`` times on the arrays in ``data``; the answer is saved beside them.

    For agemetric's HNSW, searches alternate with faiss's own search of the same index (``bare_search``).
    """
    gallery, ages, queries = (np.load(data / f"{name}.npy") for name in ("gallery", "ages", "queries"))
    warm_up, _ = builders(gallery[:500].copy(), ages[:500].copy())[case]()  # torch's and faiss's first calls
    warm_up(queries[:10])
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current size: the data is in
    start = status_mb("VmRSS")
    build_s, (search, bare) = timed(builders(gallery, ages)[case])
    times, bare_times = [], []
    for _ in range(searches):
        t, (dist, idx) = timed(lambda: search(queries))
        times.append(t)
        if bare is not None:
            bare_times.append(timed(lambda: bare(queries))[0])
    peak = status_mb("VmHWM") - start
    np.save(data / f"{case}-dist.npy", dist)
    np.save(data / f"{case}-idx.npy", idx)
    out = {"build": build_s, "search": statistics.median(times), "peak_mb": peak}
    return out | ({"bare_search": statistics.median(bare_times)} if bare_times else {})


def fresh(case: str, data: Path, searches: int) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--data", str(data), "--repeat", str(searches)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def compare(name: str, gallery: np.ndarray, ages: np.ndarray, queries: np.ndarray, args, hnsw: bool) -> list[str]:
    """Markdown rows for one gallery: exact (alternated ``--repeat`` times), then HNSW (one build each)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        for key, array in (("gallery", gallery), ("ages", ages), ("queries", queries)):
            np.save(data / f"{key}.npy", np.ascontiguousarray(array, dtype=np.float32))
        runs = {"agemetric-flat": [], "faiss-flat": []}
        for _ in range(args.repeat):  # alternate, so both see the same machine
            for case, out in runs.items():
                out.append(fresh(case, data, 1))
        exact = np.load(data / "faiss-flat-idx.npy")
        if not np.allclose(np.load(data / "agemetric-flat-dist.npy"), np.load(data / "faiss-flat-dist.npy"), rtol=1e-5):
            raise SystemExit(f"{name}: agemetric's exact distances differ from IndexFlat's")
        o, f = (
            {key: statistics.median(r[key] for r in runs[c]) for key in ("build", "search", "peak_mb")} for c in runs
        )
        total_o, total_f = o["build"] + o["search"], f["build"] + f["search"]
        rows = [
            f"| {name} | exact, build + search | {total_o:.2f} | {total_f:.2f} | {total_o / total_f:.2f} | 1 | "
            f"{o['peak_mb']:,.0f} | {f['peak_mb']:,.0f} |"
        ]
        if not hnsw:
            return rows
        o, f = fresh("agemetric-hnsw", data, args.repeat), fresh("faiss-hnsw", data, args.repeat)
        recalls = [recall(np.load(data / f"{c}-idx.npy"), exact) for c in ("agemetric-hnsw", "faiss-hnsw")]
    rows.append(
        f"| {name} | HNSW build | {o['build']:.2f} | {f['build']:.2f} | {o['build'] / f['build']:.2f} | | "
        f"{o['peak_mb']:,.0f} | {f['peak_mb']:,.0f} |"
    )
    rows.append(
        f"| {name} | HNSW search (same index) | {o['search']:.3f} | {o['bare_search']:.3f} | "
        f"{o['search'] / o['bare_search']:.2f} | {recalls[0]:.4f} / {recalls[1]:.4f} | | |"
    )
    return rows


# -- real embeddings: a finished run's gallery and test set ----------------------------------------


def real_embeddings(run_dir: Path, cache: Path, data_dir: str | None):
    """The run's gallery (retriever state) and its test set's embeddings and ages (embedded once, cached)."""
    gallery = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)["retriever"]
    if not cache.is_file():
        from agemetric.data.loading import run_faces
        from agemetric.estimator import AgeEstimator

        estimator = AgeEstimator.load(run_dir / "model.pt")
        data = run_faces(run_dir, ["test"], data_dir)["test"]
        torch.save({"queries": estimator.embed(data.images), "ages": data.ages}, cache)
    test = torch.load(cache, weights_only=True)
    return gallery, test["queries"], test["ages"].float()


def random_per_age(ages: torch.Tensor, per_age: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A baseline: ``per_age`` random faces per integer age, each weighted by its age's count / chosen."""
    g = torch.Generator().manual_seed(seed)
    years = ages.floor()
    keep, weights = [], []
    for year in years.unique():
        idx = torch.nonzero(years == year).flatten()
        chosen = idx[torch.randperm(len(idx), generator=g)[:per_age]]
        keep.append(chosen)
        weights.append(torch.full((len(chosen),), len(idx) / len(chosen)))
    return torch.cat(keep), torch.cat(weights)


def references_table(gallery: dict, queries: torch.Tensor, truth: torch.Tensor, args) -> list[str]:
    """MAE and search time of reduced galleries against the whole one (k = 20 for all)."""
    emb, ages, genders = gallery["embeddings"], gallery["ages"], gallery["genders"]
    full = L1KNN(k=K).fit(emb, ages, genders)
    cases = [("all (exact)", lambda: full)]
    for n in (int(n) for n in args.per_age.split(",")):
        cases.append((f"per-age, {n} per age", lambda n=n: L1KNN(k=K, references="per-age", per_age=n).fit(emb, ages)))
    n = args.baseline_per_age

    def unweighted():
        r = L1KNN(k=K, references="per-age", per_age=n).fit(emb, ages)
        r.gallery.weights = None
        return r

    def random():
        keep, weights = random_per_age(ages, n)
        knn = L1KNN(k=K)
        knn.gallery.set(emb[keep], ages[keep], None, weights)
        return knn

    cases += [(f"per-age, {n} per age, plain mean (no weights)", unweighted), (f"random, {n} per age", random)]
    rows = []
    base_time = base_mae = None
    for name, build in cases:
        builds, times, pred = [], [], None
        for _ in range(args.repeat):  # median wall times
            t, r = timed(build)
            builds.append(t)
            t, pred = timed(lambda r=r: r.predict(queries))
            times.append(t)
        build_time, t, err = statistics.median(builds), statistics.median(times), mae(pred, truth)
        base_time, base_mae = (t, err) if base_time is None else (base_time, base_mae)
        rows.append(
            f"| {name} | {len(r):,} | {err:.3f} | {err - base_mae:+.3f} | {build_time:.2f} | {t:.3f} | "
            f"{base_time / t:.1f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="19000,200000,1000000", help='synthetic gallery sizes ("": none)')
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=16, help="factors of the synthetic model (0: i.i.d.)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="alternating timings of each (median)")
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="largest gallery given an HNSW index")
    parser.add_argument("--run", type=Path, help="a finished run folder: real embeddings")
    parser.add_argument("--cache", type=Path, help="test-set embeddings file (default RUN/test_embeddings.pt)")
    parser.add_argument("--data-dir", help="the run's dataset folder, if not where its config says")
    parser.add_argument("--per-age", default="1,3,10,30", help="references per age to try (with --run)")
    parser.add_argument("--baseline-per-age", type=int, default=10, help="per age of the unweighted and random rows")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # internal: one case, this process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)  # internal: the case's arrays
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.data, args.repeat)))
        return
    print(f"torch {torch.__version__}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} faiss threads, k = {K}")
    options = L1KNN(index="hnsw").options
    print(f"HNSW: M = {options.hnsw_m}, efConstruction = {options.ef_construction}, efSearch = {options.ef_search}\n")
    header = [
        "| gallery | case | agemetric (s) | bare faiss (s) | agemetric / faiss | recall@20 (agemetric / faiss) "
        "| agemetric peak (MB) | faiss peak (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    for n in (int(s) for s in args.sizes.split(",") if s):  # --sizes "": real embeddings only
        gallery, ages = synthetic(n, args.dim, args.latent_dim, seed=0)
        queries, _ = synthetic(args.queries, args.dim, args.latent_dim, seed=1)
        name = f"synthetic {n:,} x {args.dim}, {args.queries:,} queries"
        print("\n".join(compare(name, gallery, ages, queries, args, hnsw=n <= args.hnsw_max)), flush=True)
    if args.run is None:
        return
    gallery, queries, truth = real_embeddings(args.run, args.cache or args.run / "test_embeddings.pt", args.data_dir)
    emb = gallery["embeddings"].float().contiguous()
    name = f"{args.run.name}: {emb.shape[0]:,} x {emb.shape[1]}, {len(queries):,} test queries"
    q = queries.float().contiguous().numpy()
    print("\n".join(compare(name, emb.numpy(), gallery["ages"].float().numpy(), q, args, hnsw=True)))
    print(f"\nReference selection on {args.run} (k = {K}; time: predict() for {len(queries):,} test queries)\n")
    print("| gallery | items | MAE | change | selection (s) | search (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(references_table(gallery, queries, truth, args)))


if __name__ == "__main__":
    main()
