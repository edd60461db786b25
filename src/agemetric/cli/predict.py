"""``agemetric predict``: ages of image files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agemetric.cli._common import console, guarded, print_error


@guarded
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `agemetric run`.")],
    images: Annotated[list[Path], typer.Argument(help="Face images (cropped, frontal).")],
) -> None:
    """Print the estimated age of each image. Unreadable files are reported and skipped (exit 1)."""
    import torch
    from PIL import Image

    from agemetric.data.arrays import to_square
    from agemetric.estimator import AgeEstimator
    from agemetric.experiment import make_framer

    estimator = AgeEstimator.load(Path(run_dir) / "model.pt")
    framer = make_framer(estimator.config)
    arrays, names, failed = [], [], 0
    for path in images:
        try:
            with Image.open(path) as img:
                arrays.append(torch.from_numpy(to_square(img, estimator.image_size, framer).copy()).permute(2, 0, 1))
            names.append(str(path))
        except Exception as exc:
            failed += 1
            print_error(f"{path}: cannot read image ({type(exc).__name__}); skipped")
    if arrays:
        ages = estimator.predict(torch.stack(arrays))  # (N,)
        table = Table(header_style="bold")
        table.add_column("image", overflow="fold")
        table.add_column("age", justify="right")
        for name, age in zip(names, ages.tolist(), strict=True):
            table.add_row(name, f"{age:.1f}")
        console.print(table)
    if failed:
        raise typer.Exit(1)
