"""Use ``agemetric serve``'s page in headless Chromium as a person would: drop a photo, read the
ages drawn on it, drop a file that is not a photo, read the error.

Usage::

    python docs/check_serve_page.py --shot docs/img/serve-page.png

It trains a tiny model on the embedded synthetic faces framed with ``dlib-align`` (about a
minute; or ``--model`` a run folder or bundle of yours), starts ``agemetric serve`` on a free
local port, and drives Debian's ``chromium`` through Playwright (``pip install playwright``;
only its driver is used, no browser is downloaded). A photo of two drawn faces must come back
with two boxes drawn and two ages in the caption, with the probability under 18 asked for;
a text file must show a one-line error; the server must answer ``/health`` after both. With
``--shot`` the page is saved as a screenshot. Exit code 0 = all good, 1 = a check failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

#: synthetic faces (index, age, gender) that dlib's HOG detector finds when drawn at 200 px
FACES = [(3, 33, 1), (21, 51, 1)]


def tiny_model(folder: Path) -> Path:
    """A one-epoch quick-preset run on 300 synthetic faces, framed with dlib-align."""
    import agemetric

    sets = ["epochs=1", "dataset_options.n=300", "image_size=32", "framing=dlib-align", "figures=false"]
    return agemetric.run(agemetric.resolve("quick", sets=[*sets, f"out={folder}"])).run_dir


def group_photo(file: Path) -> Path:
    """Two drawn faces pasted on a grey-blue background."""
    from agemetric.data import synthetic

    photo = Image.new("RGB", (640, 400), (90, 110, 140))
    for (index, age, gender), (left, top) in zip(FACES, [(40, 100), (380, 80)], strict=True):
        face = synthetic.render(index, age, gender, 0, size=200)
        photo.paste(Image.fromarray(face), (left, top))
    photo.save(file, quality=92)
    return file


def check(page, base: str, photo: Path, junk: Path, shot: Path | None) -> list[str]:
    """Drive the page; returns the problems found."""
    problems = []
    page.goto(base + "/")
    page.fill("#under", "18")
    page.set_input_files("#files", str(photo))
    page.wait_for_selector("canvas[data-drawn=yes]", timeout=60_000)
    caption = page.inner_text("figcaption")
    faces = caption.split(": ", 1)[1].split("; ") if ": " in caption else []
    if len(faces) != 2 or not all("P(under 18) " in face and "-" in face for face in faces):
        problems.append(f"expected two faces with an interval and P(under 18) in the caption, got {caption!r}")
    drawn = page.evaluate("document.querySelector('canvas').width")
    if drawn != Image.open(photo).width:
        problems.append(f"the photo is drawn {drawn} px wide, not at its own size")
    if shot is not None:
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
    page.set_input_files("#files", str(junk))
    page.wait_for_selector("#status.error", timeout=30_000)
    status = page.inner_text("#status")
    if "cannot read image" not in status:
        problems.append(f"a text file should show 'cannot read image', the page shows {status!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a run folder or bundle (default: a tiny one trained here)")
    parser.add_argument("--shot", type=Path, help="save a screenshot of the page with the photo drawn")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("check_serve_page: needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from agemetric.testing import serving, wait_until_serving

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or tiny_model(tmp / "run")
        photo, junk = group_photo(tmp / "two-faces.jpg"), tmp / "notes.jpg"
        junk.write_text("not a photo")
        try:
            with serving(model) as (_, base), sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1000, "height": 800})
                problems = check(page, base, photo, junk, args.shot)
                browser.close()
                wait_until_serving(base, seconds=5)  # still serving after both drops
        except AssertionError as exc:  # the server did not start, or stopped answering
            raise SystemExit(f"check_serve_page: {exc}") from None
    for problem in problems:
        print(f"check_serve_page: {problem}", file=sys.stderr)
    print("check_serve_page: " + ("failed" if problems else "the page drew both faces and showed the error"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
