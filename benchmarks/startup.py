"""How long the ``agemetric`` command takes to start: ``--help`` and ``cache`` beside importing torch.

Each command runs ``--repeats`` times in a new process (after one untimed run that warms the
file cache) and the median wall time is printed, with its ratio to ``python -c "import torch"``
measured in the same run: the commands that load no model should start in a fraction of torch's
import time (tab completion runs the program on every key press). Run it alone on the machine.

Usage::

    python benchmarks/startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(command: list[str], repeats: int, env: dict[str, str]) -> float:
    """The median wall time of ``command`` over ``repeats`` runs, after one untimed run."""
    times = []
    for attempt in range(repeats + 1):
        began = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if attempt:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each command")
    args = parser.parse_args()
    agemetric = str(Path(sys.executable).with_name("agemetric"))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "AGEMETRIC_CACHE": cache}
        commands = {
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "agemetric --help": [agemetric, "--help"],
            "agemetric cache": [agemetric, "cache"],
            "agemetric --help, no third-party plugins": [agemetric, "--help"],
        }
        seconds = {}
        for label, command in commands.items():
            run_env = {**env, "AGEMETRIC_LOAD_PLUGINS": ""} if "no third-party" in label else env
            seconds[label] = median_seconds(command, args.repeats, run_env)
    torch_import = seconds['python -c "import torch"']
    print(f"{'command':<42} {'median s':>9} {'x import torch':>15}")
    for label, value in seconds.items():
        print(f"{label:<42} {value:>9.2f} {value / torch_import:>15.2f}")


if __name__ == "__main__":
    main()
