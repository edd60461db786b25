"""``agemetric predict``: the age of every face in photos, from a run folder or an exported bundle."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agemetric._text import printable
from agemetric.cli._common import RichReporter, console, err_console, guarded, make_progress, print_error

#: photos framed and estimated together (bounded memory for any number of files)
CHUNK = 32


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
            help="CSV on stdout: photo,face,left,top,right,bottom,age,low,high,note (the default when piped); "
            "low and high are the ends of the model's calibrated interval, empty when it has none.",
        ),
    ] = False,
    under: Annotated[
        float | None,
        typer.Option(
            metavar="YEARS",
            help="Also answer 'is this person under YEARS?': the share of the nearest training faces that "
            "are (a column p_under, or the field p_under in --json).",
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
) -> None:
    """Estimate the age of every face in each photo, with its interval when the model has one.

    An age reads "34 (29-40)": the estimate and the interval calibrated to hold the true age for
    nine faces in ten (the run's interval_level). A table on a terminal; CSV when stdout is piped
    (or with --csv); JSON Lines with --json.
    A photo without a face is reported on stderr and the others estimated; unreadable files are
    reported and skipped (exit 1). A bundle runs without the training code (see `agemetric export`).
    """
    from agemetric.errors import AgemetricError
    from agemetric.photos import find_faces, photo_files, read_photo

    if json_out and csv_out:
        raise AgemetricError("--json and --csv: choose one output format")
    if under is not None and not 0 < under <= 150:
        raise AgemetricError(f"--under: expected an age in years between 0 and 150, got {under:g}")
    size, framer, estimate = _model(model, runtime)
    files = photo_files(photos)
    if not files:
        raise AgemetricError(f"no photos in {', '.join(map(str, photos))} (looked for {', '.join(_suffixes())})")
    annotations = None if annotate is None else _Annotations(annotate, files)
    fmt = "json" if json_out else "csv" if csv_out or not sys.stdout.isatty() else "table"
    writer = _Writer(fmt, under)
    failed = 0
    with make_progress(disable=len(files) < 2 or not err_console.is_terminal) as progress:
        bar = RichReporter(progress).bar("photos", len(files))
        for start in range(0, len(files), CHUNK):
            chunk, images, sizes = [], [], []
            for path in files[start : start + CHUNK]:
                try:
                    image, original = read_photo(path)
                except Exception as exc:
                    failed += 1
                    print_error(f"{path}: cannot read image ({type(exc).__name__}: {str(exc)[:80]}); skipped")
                    continue
                chunk.append(path)
                images.append(image)
                sizes.append(original)
            faces = find_faces(images, size, framer)
            found = [f for f in faces if f.note is None]
            results = estimate(np.stack([f.pixels for f in found]), under) if found else {}
            age_of = {}
            for j, face in enumerate(found):
                age_of[id(face)] = {k: None if v is None else float(v[j]) for k, v in results.items()}
            for i, (path, image, original) in enumerate(zip(chunk, images, sizes, strict=True)):
                mine = [(f, age_of.get(id(f))) for f in faces if f.photo == i]
                for face, _ in mine:
                    if face.note is not None:
                        err_console.print(
                            f"[yellow]{escape(printable(f'{path}: {face.note}'))}[/]", highlight=False, soft_wrap=True
                        )
                writer.photo(printable(str(path)), original, [(_rescaled(f, image.size, original), r) for f, r in mine])
                if annotations is not None and not annotations.write(path, _annotate(image, mine)):
                    failed += 1
            bar.advance(len(files[start : start + CHUNK]))
    writer.close()
    if annotations is not None and annotations.written:
        where = escape(printable(str(annotations.folder)))
        err_console.print(f"{annotations.written} annotated photo(s) in {where}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _suffixes() -> tuple[str, ...]:
    from agemetric.photos import PHOTO_SUFFIXES

    return PHOTO_SUFFIXES


class _Annotations:
    """Where ``--annotate`` writes each photo with its faces drawn: ``DIR/<photo name>.jpg``, or
    ``<photo name>-2.jpg``, ``-3``, ... when that name is taken. A file is never overwritten (each
    is created exclusively), and a folder that holds the photos themselves is refused."""

    def __init__(self, folder: Path, photos: list[Path]):
        from agemetric.errors import AgemetricError

        resolved = folder.resolve()
        holding = next((p for p in photos if p.resolve().parent == resolved), None)
        if holding is not None:
            raise AgemetricError(
                f"--annotate {folder}: holds the photo {holding.name!r}; choose another folder for the annotated copies"
            )
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
                print_error(
                    f"--annotate: cannot write {out} ({exc.strerror or exc}); no more annotated copies are written, "
                    "the remaining photos are still estimated"
                )
                return False


def _rescaled(face, shown: tuple[int, int], original: tuple[int, int]):
    """``face`` with its box in the original photo's pixels (a photo is read at most `MAX_SIDE`
    pixels a side, so a larger one's boxes are scaled back up)."""
    if face.box is None or shown == original:
        return face
    sx, sy = original[0] / shown[0], original[1] / shown[1]
    left, top, right, bottom = face.box
    box = (
        max(0, round(left * sx)),
        max(0, round(top * sy)),
        min(original[0], round(right * sx)),
        min(original[1], round(bottom * sy)),
    )
    return dataclasses.replace(face, box=box)


def _model(path: Path, runtime: str) -> tuple[int, object, Callable[[np.ndarray, float | None], dict]]:
    """``(image size, framer, estimate)`` of a run folder or a bundle; ``estimate(images, under)``
    maps uint8 ``(N, 3, S, S)`` to ``{"age", "low", "high", "under", ...}`` arrays ``(N,)`` (or ``None``)."""
    from agemetric.bundle import Bundle
    from agemetric.bundle_files import is_bundle
    from agemetric.errors import AgemetricError

    if is_bundle(path):
        bundle = Bundle(path, runtime)
        return bundle.image_size, bundle.framer, bundle.estimate
    from agemetric.runs import RunFolder

    model = RunFolder(path).model
    if not model.is_file():
        raise AgemetricError(f"{path}: neither a run folder ({RunFolder.MODEL}) nor a bundle (bundle.json)")
    if runtime != "auto":
        raise AgemetricError(f"--runtime applies to bundles only; {path} is not one (no bundle.json)")
    import torch

    from agemetric.estimator import AgeEstimator

    estimator = AgeEstimator.load(model)

    def estimate(images: np.ndarray, under: float | None) -> dict:
        found = vars(estimator.estimate(torch.from_numpy(images), under=under))
        return {k: None if v is None else v.numpy() for k, v in found.items()}

    return estimator.image_size, estimator.framer, estimate


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

    def photo(self, name: str, size: tuple[int, int], faces: list) -> None:
        """One photo's rows; ``name`` is printable (no control characters), ``size`` and the
        boxes are in the photo's own pixels."""
        if self.fmt == "json":
            rows = [{"box": None if f.box is None else list(f.box), **_fields(r, self.under), "note": f.note}
                    for f, r in faces]  # fmt: skip
            print(json.dumps({"photo": name, "width": size[0], "height": size[1], "faces": rows}), flush=True)
            return
        for number, (face, result) in enumerate(faces, start=1):
            box = face.box or ("", "", "", "")
            fields = _fields(result, self.under)
            if self.fmt == "csv":
                cells = ["" if fields.get(k) is None else f"{fields[k]:g}" for k in ("age", "low", "high")]
                cells += ["" if fields.get("p_under") is None else f"{fields['p_under']:g}"] * (self.under is not None)
                self.csv.writerow([name, number, *box, *cells, face.note or ""])
            else:
                where = "whole photo" if face.box is None else ",".join(map(str, face.box))
                shown = escape(face.note or "") if result is None else _shown(fields)
                extra = [] if self.under is None else ["" if result is None else f"{fields['p_under']:.2f}"]
                self.table.add_row(Text(name), str(number), where, shown, *extra)
        if self.fmt == "csv":
            sys.stdout.flush()

    def close(self) -> None:
        if self.fmt == "table":
            console.print(self.table)


def _fields(result: dict | None, under: float | None) -> dict:
    """A face's age, interval ends and (with ``under``) probability, rounded; ``None`` values for
    a face that was not estimated."""
    result = result or {}
    out = {k: None if result.get(k) is None else round(result[k], 2) for k in ("age", "low", "high")}
    if under is not None:
        out["p_under"] = None if result.get("under") is None else round(result["under"], 3)
    return out


def _shown(fields: dict) -> str:
    """``34`` or, with an interval, ``34 (29-40)``."""
    if fields["low"] is None:
        return f"{fields['age']:.1f}"
    return f"{fields['age']:.0f} ({fields['low']:.0f}-{fields['high']:.0f})"


def _annotate(image, faces: list):
    """A copy of ``image`` with each face's box and age drawn."""
    from PIL import ImageDraw

    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 300))
    font_size = max(12, round(max(out.size) / 30))
    for face, result in faces:
        label = "no face" if result is None else _shown(_fields(result, None))
        box = face.box or (0, 0, out.width - 1, out.height - 1)
        draw.rectangle(box, outline=(255, 215, 0), width=width)
        text_at = (box[0] + width, max(0, box[1] - font_size - 2 * width))
        bounds = draw.textbbox(text_at, label, font_size=font_size)
        draw.rectangle(bounds, fill=(0, 0, 0))
        draw.text(text_at, label, fill=(255, 215, 0), font_size=font_size)
    return out
