"""``agemetric predict``: the age of every face in photos, from a run folder or an exported bundle."""

from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agemetric._text import printable
from agemetric.cli._common import RichReporter, console, err_console, guarded, make_progress, print_warning


@guarded
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="A run folder written by `agemetric run`, or a bundle from `agemetric export`."
        ),
    ],
    photos: Annotated[
        list[Path],
        typer.Argument(
            metavar="PHOTOS",
            help="Photos, or folders of photos. Faces are found and framed as the run framed its training "
            "images: with --framing dlib-align (the face preset) any photo works, every face is estimated.",
        ),
    ],
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per photo per line (JSON Lines) on stdout.")
    ] = False,
    csv_out: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="CSV on stdout (the default when piped), with the columns photo, face, left, top, right, "
            "bottom, age, low, high and note; low and high are the ends of the model's calibrated interval, "
            "empty when it has none.",
        ),
    ] = False,
    under: Annotated[
        float | None,
        typer.Option(
            metavar="YEARS",
            help="Also answer 'is this person under YEARS?': the share of the nearest training faces that "
            "are (a column p_under_YEARS in CSV, the field p_under in --json).",
        ),
    ] = None,
    annotate: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Write a copy of each photo into this folder with its faces boxed and ages drawn, as NAME.jpg "
            "(NAME-2.jpg, ... when that name is taken: no file is ever overwritten). Not the photos' own folder.",
        ),
    ] = None,
    runtime: Annotated[
        Literal["auto", "torchscript", "onnx"],
        typer.Option(help="For a bundle: auto, torchscript (needs torch) or onnx (needs onnxruntime)."),
    ] = "auto",
    framing_processes: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="N",
            help="Read the photos and find their faces in N processes (at most one per core) while this one "
            "estimates them; each loads the face detector, about a second. 0: on threads of this process. "
            "Faster for many large photos with a face detector (dlib-align); slower for small face crops.",
        ),
    ] = 0,
) -> None:
    """Estimate the age of every face in each photo, with its interval when the model has one.

    An age reads "34 (29-40)": the estimate and the interval calibrated to hold the true age for
    nine faces in ten (the run's interval_level). A table on a terminal; CSV when stdout is piped
    (or with --csv); JSON Lines with --json.
    A photo without a face is reported on stderr and the others estimated; unreadable files are
    reported and skipped (exit 1). A bundle runs without the training code (see `agemetric export`).
    """
    from agemetric.analysis import analyses, check_under
    from agemetric.errors import AgemetricError
    from agemetric.photos import photo_files
    from agemetric.predictors import load_predictor

    if json_out and csv_out:
        raise AgemetricError("--json and --csv: choose one output format")
    check_under(under, "--under")
    # with framing processes, the network keeps to half the cores (as agemetric serve's does)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // 2) if framing_processes else None
    missing = next((path for path in photos if not path.exists()), None)
    if missing is not None:  # before the model loads
        raise AgemetricError(f"PHOTOS: {missing} does not exist; expected a photo or a folder of photos")
    files = photo_files(photos)
    if not files:
        nested = any(path.is_dir() and any(p.is_dir() for p in path.iterdir()) for path in photos)
        raise AgemetricError(
            f"no photos in {', '.join(map(str, photos))} (looked for {', '.join(_suffixes())}"
            + ("; folders inside a folder are not searched" if nested else "")
            + ")"
        )
    if annotate is not None:
        _Annotations.check(annotate, files)
    predictor = load_predictor(model, runtime, threads)
    annotations = None if annotate is None else _Annotations(annotate)
    fmt = "json" if json_out else "csv" if csv_out or not sys.stdout.isatty() else "table"
    writer = _Writer(fmt, under)
    failed = 0
    processes = None
    if framing_processes:
        from agemetric.framing_processes import FramingProcesses

        processes = FramingProcesses(predictor, min(framing_processes, cores, len(files)))
    with make_progress(disable=len(files) < 2 or not err_console.is_terminal) as progress, processes or nullcontext():
        bar = RichReporter(progress).bar("photos", len(files))
        results = analyses(predictor, files, under, processes=processes, framed=bar.advance)
        for path, (result, image) in zip(files, results, strict=True):
            if result.error is not None:
                failed += 1
                print_warning(f"{path}: {result.error}; skipped")
                continue
            for face in result.faces:
                if face.note is not None:
                    err_console.print(
                        f"[yellow]{escape(printable(f'{path}: {face.note}'))}[/]", highlight=False, soft_wrap=True
                    )
            writer.photo(result)
            if annotations is not None:
                image = image if image is not None else _read_again(path)  # framed in another process
                if image is None or not annotations.write(path, _annotate(image, result)):
                    failed += 1
    writer.close()
    if annotations is not None and annotations.written:
        where = escape(printable(str(annotations.folder)))
        err_console.print(f"{annotations.written} annotated photo(s) in {where}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _read_again(path: Path):
    """The photo ``path`` read again to draw its faces on, or ``None`` (reported) when it can no
    longer be read."""
    from PIL import Image

    from agemetric.photos import read_photo

    try:
        return read_photo(path)[0]
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        print_warning(f"{path}: cannot read it again to annotate ({type(exc).__name__}); not annotated")
        return None


def _suffixes() -> tuple[str, ...]:
    from agemetric.photos import PHOTO_SUFFIXES

    return PHOTO_SUFFIXES


class _Annotations:
    """Where ``--annotate`` writes each photo with its faces drawn: ``DIR/<photo name>.jpg``, or
    ``<photo name>-2.jpg``, ``-3``, ... when that name is taken. A file is never overwritten (each
    is created exclusively), and a folder that holds the photos themselves is refused."""

    @staticmethod
    def check(folder: Path, photos: list[Path]) -> None:
        """Refuse a folder that is a file or holds the photos (before the model loads)."""
        from agemetric.errors import AgemetricError

        if folder.exists() and not folder.is_dir():
            raise AgemetricError(f"--annotate {folder}: is a file; expected a folder for the annotated copies")
        resolved = folder.resolve()
        holding = next((p for p in photos if p.resolve().parent == resolved), None)
        if holding is not None:
            raise AgemetricError(
                f"--annotate {folder}: holds the photo {holding.name!r}; choose another folder for the annotated copies"
            )

    def __init__(self, folder: Path):
        """Make ``folder`` (already through `check()`, which runs before the model loads)."""
        from agemetric.errors import AgemetricError

        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AgemetricError(f"--annotate: cannot create {str(folder)!r}: {exc.strerror or exc}") from None
        self.folder, self.broken, self.written = folder, False, 0

    def write(self, photo: Path, image) -> bool:
        """Save ``image``, the annotated copy of ``photo``; after a failure (a full or read-only
        disk) say so once and write no more. Returns whether it was written."""
        if self.broken:
            return False
        number = 1
        while True:
            out = self.folder / (f"{photo.stem}.jpg" if number == 1 else f"{photo.stem}-{number}.jpg")
            try:
                with open(out, "xb") as f:  # exclusive: never replaces a file
                    try:
                        image.save(f, "JPEG", quality=92)
                    except BaseException:
                        f.close()
                        out.unlink(missing_ok=True)  # no half-written copy
                        raise
                self.written += 1
                return True
            except FileExistsError:
                number += 1
            except OSError as exc:
                self.broken = True
                print_warning(
                    f"--annotate: cannot write {out} ({exc.strerror or exc}); no more annotated copies are written, "
                    "the remaining photos are still estimated"
                )
                return False


class _Writer:
    """Rows out, as a rich table (printed at the end), CSV or JSON Lines (streamed)."""

    def __init__(self, fmt: str, under: float | None = None):
        self.fmt, self.under = fmt, under
        extra = [] if under is None else [f"p_under_{under:g}"]
        if fmt == "table":
            self.table = Table(header_style="bold")
            columns = [("photo", "left"), ("face", "right"), ("box", "left"), ("age", "right")]
            if under is not None:
                columns.append((f"P(under {under:g})", "right"))
            for name, justify in columns:
                self.table.add_column(name, justify=justify, overflow="fold")
        elif fmt == "csv":
            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            self.csv.writerow(["photo", "face", "left", "top", "right", "bottom", "age", "low", "high", *extra, "note"])

    def photo(self, result) -> None:
        """One photo's rows (`agemetric.analysis.PhotoResult`), its name made printable (no
        control characters); sizes and boxes are in the photo's own pixels."""
        name = printable(result.source)
        if self.fmt == "json":
            print(json.dumps({**result.to_dict(), "photo": name}), flush=True)
            return
        for number, face in enumerate(result.faces, start=1):
            box = face.box or ("", "", "", "")
            if self.fmt == "csv":
                fields = face.to_dict(under=self.under is not None)  # rounded as in --json
                names = ("age", "low", "high", "p_under") if self.under is not None else ("age", "low", "high")
                cells = ["" if fields[n] is None else f"{fields[n]:g}" for n in names]
                self.csv.writerow([name, number, *box, *cells, face.note or ""])
            else:
                where = "whole photo" if face.box is None else ",".join(map(str, face.box))
                extra = [] if self.under is None else ["" if face.p_under is None else f"{face.p_under:.2f}"]
                self.table.add_row(Text(name), str(number), where, Text(str(face)), *extra)
        if self.fmt == "csv":
            sys.stdout.flush()

    def close(self) -> None:
        if self.fmt == "table" and self.table.row_count:
            console.print(self.table)


def _annotate(image, result):
    """A copy of ``image`` (the photo as framed) with each face of ``result`` boxed and its age drawn
    (after its number in the output, ``2: 34 (29-40)``, when the photo has several)."""
    from PIL import ImageDraw

    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    font_size = max(12, round(max(out.size) / 30))
    sx, sy = out.width / result.size[0], out.height / result.size[1]  # boxes are in the photo's own pixels
    for number, face in enumerate(result.faces, start=1):
        label = "no face" if face.age is None else str(face)
        if len(result.faces) > 1:
            label = f"{number}: {label}"
        box = (0, 0, out.width - 1, out.height - 1)
        if face.box is not None:
            box = (face.box[0] * sx, face.box[1] * sy, face.box[2] * sx, face.box[3] * sy)
        draw.rectangle(box, outline=(255, 215, 0), width=width)
        text_at = (box[0] + width, max(0, box[1] - font_size - 2 * width))
        bounds = draw.textbbox(text_at, label, font_size=font_size)
        draw.rectangle(bounds, fill=(0, 0, 0))
        draw.text(text_at, label, fill=(255, 215, 0), font_size=font_size)
    return out
