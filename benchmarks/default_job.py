"""The default job (``agemetric run``, the quick preset) on this machine: run time and MAE.

Runs the README's first command's job, ``agemetric run``, as a new user would get it (a fresh
cache, so the embedded faces are drawn too), once in float32 (``--bf16 off``) and once with
bfloat16 autocast where the CPU has it, each in its own process, one after the other. Prints the
wall time of each command, its phases, and its MAE beside the mean predictor's (the target: at
most half of it). Run it alone on the machine.

``--avx2`` also runs float32 with oneDNN and PyTorch's kernels held to AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``): the instructions a float32-only
CPU without AVX-512 has (the core's speed remains this machine's). ``--one-core`` also runs that
on one core only (``os.sched_setaffinity``): a bound for a 2-core float32 CPU whose cores run at
least half as fast as these.

Usage::

    python benchmarks/default_job.py --avx2 --one-core
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_job(label: str, options: list[str], env: dict[str, str], tmp: Path, cores: set[int] | None = None) -> dict:
    """``agemetric run OPTIONS`` in a fresh cache (on ``cores`` only, when given): the wall time,
    the phases it prints, its MAE."""
    out, cache = tmp / f"run-{label}", tmp / f"cache-{label}"
    command = [str(Path(sys.executable).with_name("agemetric")), "run", *options, "--out", str(out)]
    began = time.perf_counter()
    done = subprocess.run(
        command,
        env={**os.environ, **env, "AGEMETRIC_CACHE": str(cache)},
        capture_output=True,
        text=True,
        preexec_fn=None if cores is None else lambda: os.sched_setaffinity(0, cores),
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{label}: agemetric run failed\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    phases = re.search(r"Done in .*?\((.*?)\)", done.stdout)
    return {
        "label": label,
        "seconds": seconds,
        "phases": phases[1] if phases else "",
        "mae": metrics["mae"],
        "mean": metrics["mean_predictor_mae"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--avx2", action="store_true", help="also float32 held to AVX2 instructions")
    parser.add_argument("--one-core", action="store_true", help="also float32 held to AVX2 on one core")
    parser.add_argument("--seed", type=int, default=None, help="--seed for agemetric run (default: the preset's)")
    args = parser.parse_args()
    seed = [] if args.seed is None else ["--seed", str(args.seed)]
    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    jobs = [("float32", ["--bf16", "off", *seed], {}, None)]
    if args.avx2:
        jobs.append(("float32, AVX2", ["--bf16", "off", *seed], avx2, None))
    if args.one_core:
        jobs.append(("float32, AVX2, one core", ["--bf16", "off", *seed], avx2, {min(os.sched_getaffinity(0))}))
    from agemetric.devices import bf16_supported

    if bf16_supported("cpu"):
        jobs.append(("bfloat16", ["--bf16", "on", *seed], {}, None))
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_job(label, options, env, Path(tmp), cores) for label, options, env, cores in jobs]
    print("| precision | wall time | phases | MAE | mean predictor | ratio (target <= 0.5) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['label']} | {r['seconds']:.0f} s | {r['phases']} | {r['mae']:.2f} | {r['mean']:.2f} | "
            f"{r['mae'] / r['mean']:.2f} |"
        )


if __name__ == "__main__":
    main()
