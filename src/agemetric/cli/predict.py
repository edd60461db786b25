"""``agemetric predict``: ages of image files, from a run folder or an exported bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from agemetric.cli._common import console, guarded, print_error


@guarded
def predict(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder written by `agemetric run`, or a bundle from `agemetric export`.")
    ],
    images: Annotated[list[Path], typer.Argument(help="Face images (cropped, frontal).")],
    runtime: Annotated[
        str, typer.Option(help="For a bundle: auto, torchscript (needs torch) or onnx (needs onnxruntime).")
    ] = "auto",
) -> None:
    """Print the estimated age of each image. Unreadable files are reported and skipped (exit 1).

    A bundle runs without the training code (see `agemetric export`).
    """
    from agemetric.bundle import Bundle, is_bundle
    from agemetric.errors import AgemetricError

    if is_bundle(run_dir):
        bundle = Bundle(run_dir, runtime)
        read, estimate = bundle.read_image, bundle.predict
    elif not (Path(run_dir) / "model.pt").is_file():
        raise AgemetricError(f"{run_dir}: neither a run folder (model.pt) nor a bundle (bundle.json)")
    elif runtime != "auto":
        raise AgemetricError(f"--runtime applies to bundles only; {run_dir} is not one (no bundle.json)")
    else:
        read, estimate = _run_folder(run_dir)
    arrays, names, failed = [], [], 0
    for path in images:
        try:
            arrays.append(read(path))  # (3, S, S) uint8
            names.append(str(path))
        except Exception as exc:
            failed += 1
            print_error(f"{path}: cannot read image ({type(exc).__name__}); skipped")
    if arrays:
        ages = estimate(np.stack(arrays))  # (N,)
        table = Table(header_style="bold")
        table.add_column("image", overflow="fold")
        table.add_column("age", justify="right")
        for name, age in zip(names, ages.tolist(), strict=True):
            table.add_row(name, f"{age:.1f}")
        console.print(table)
    if failed:
        raise typer.Exit(1)


def _run_folder(run_dir: Path) -> tuple[Callable[[Path], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """``(read, estimate)`` of a run folder's estimator: a file -> ``(3, S, S)`` uint8; ``(N, 3, S, S)`` -> ages."""
    import torch
    from PIL import Image

    from agemetric._imaging import to_square
    from agemetric.estimator import AgeEstimator
    from agemetric.experiment import make_framer

    estimator = AgeEstimator.load(Path(run_dir) / "model.pt")
    framer = make_framer(estimator.config)

    def read(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            return to_square(img, estimator.image_size, framer).transpose(2, 0, 1)

    return read, lambda images: estimator.predict(torch.from_numpy(images)).numpy()
