"""``agemetric export``: a run folder -> a bundle that `agemetric predict` runs without the training code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from agemetric._text import printable
from agemetric.cli._common import console, guarded


@guarded
def export(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A run folder written by `agemetric run` (retriever l1-knn).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", metavar="DIR", help="The bundle folder to write (new, empty, or an earlier bundle)."),
    ],
    format_: Annotated[
        Literal["torchscript", "onnx", "both"],
        typer.Option(
            "--format",
            help="torchscript (base install), onnx or both (ONNX needs the 'export' extra: onnx, onnxscript).",
        ),
    ] = "torchscript",
) -> None:
    """Export the trained model (uint8 images in, embeddings out) and its gallery to a bundle folder.

    `agemetric predict BUNDLE photo.jpg` then needs only torch (or onnxruntime), numpy, PIL and faiss.
    """
    from agemetric.export import export_bundle

    start = time.perf_counter()
    manifest = export_bundle(run_dir, out, format_)
    seconds = time.perf_counter() - start
    table = Table(header_style="bold")
    table.add_column("file")
    table.add_column("MB", justify="right")
    for name in ("bundle.json", *manifest["files"].values()):
        table.add_row(name, f"{(Path(out) / name).stat().st_size / 1e6:.2f}")
    console.print(table)
    shown = escape(printable(f"{out} ({', '.join(manifest['files'])}; {seconds:.1f} s)"))
    console.print(f"Bundle: {shown}", soft_wrap=True)
