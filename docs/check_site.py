"""Open the built documentation site in headless Chromium: screenshots, broken links, missing images.

Usage::

    mkdocs build --strict --site-dir site && python docs/check_site.py site --shots site-shots

It serves ``SITE`` on a local port, then for every page lets Chromium (Debian's ``chromium``,
``--headless --no-sandbox --disable-gpu``) render it and dumps the DOM *after* scripts ran; every
``<a href>`` to a page of the site (and its ``#anchor``) and every ``<img src>`` must resolve
(images must also decode), or the check fails with one line per problem. It saves screenshots of
the home page and of three API pages (``--shots``) and fails if any is blank. External links are
listed, not fetched (no network here). Exit code 0 = all good, 1 = problems, 2 = bad usage.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import io
import shutil
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

SHOTS = {
    "home.png": "",
    "api.png": "api/estimator/",
    "api-building-blocks.png": "api/building-blocks/",
    "api-functional.png": "api/functional/",
}
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


class _Refs(html.parser.HTMLParser):
    """Collects link targets, image sources and element ids of one page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])


def chromium() -> str:
    for name in CHROMIUM:
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("check_site: no chromium on PATH (Debian: apt-get install chromium)")


def render(browser: str, url: str, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1400"]
    done = subprocess.run([browser, *flags, *args, url], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed on {url}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def target_file(site: Path, path: str) -> Path:
    file = site / urllib.parse.unquote(path).lstrip("/")
    return file / "index.html" if path.endswith("/") or file.is_dir() else file


def image_ok(file: Path) -> bool:
    if file.suffix == ".svg":
        return b"<svg" in file.read_bytes()[:2000]
    from PIL import Image

    try:
        with Image.open(io.BytesIO(file.read_bytes())) as img:
            img.verify()
        return True
    except Exception:
        return False


def blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as img:
        lo, hi = img.convert("L").getextrema()
    return hi - lo < 30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the folder `mkdocs build` wrote")
    parser.add_argument("--shots", type=Path, default=Path("site-shots"), help="where the screenshots go")
    args = parser.parse_args()
    site = args.site.resolve()
    if not (site / "index.html").is_file():
        print(f"check_site: {site} has no index.html; build the site first", file=sys.stderr)
        return 2
    browser = chromium()
    server, base = serve(site)
    problems, external, anchors = [], set(), {}
    pages = sorted(p for p in site.rglob("index.html") if "assets" not in p.parts and p.parent.name != "search")
    try:
        for page in pages:
            rel = page.parent.relative_to(site).as_posix()
            url = base + ("" if rel == "." else rel + "/")
            refs = _Refs()
            refs.feed(render(browser, url, "--dump-dom"))
            anchors[page] = refs.ids
            for src in refs.images:
                full = urllib.parse.urlparse(urllib.parse.urljoin(url, src))
                if full.netloc != urllib.parse.urlparse(base).netloc:
                    external.add(src)
                    continue
                file = target_file(site, full.path)
                if not file.is_file() or not image_ok(file):
                    problems.append(f"{url}: image {src!r} is missing or does not decode")
            for href in refs.links:
                full = urllib.parse.urlparse(urllib.parse.urljoin(url, href))
                if full.scheme not in ("http", "https"):
                    continue
                if full.netloc != urllib.parse.urlparse(base).netloc:
                    external.add(href)
                    continue
                file = target_file(site, full.path)
                if not file.is_file():
                    problems.append(f"{url}: link {href!r} points to nothing")
                elif full.fragment and file.suffix == ".html":
                    anchors.setdefault(file, None)
                    problems.extend(_check_anchor(url, href, file, full.fragment, anchors))
        args.shots.mkdir(parents=True, exist_ok=True)
        for name, rel in SHOTS.items():
            shot = (args.shots / name).resolve()
            render(browser, base + rel, f"--screenshot={shot}")
            if not shot.is_file() or blank(shot):
                problems.append(f"{base + rel}: the screenshot {shot} is blank or missing")
    finally:
        server.shutdown()
    problems = list(dict.fromkeys(problems))  # a link repeated on a page counts once
    for line in problems:
        print(line)
    print(
        f"{len(pages)} pages rendered, {len(problems)} problems, {len(external)} external links not fetched; "
        f"screenshots in {args.shots}/",
        file=sys.stderr,
    )
    return 1 if problems else 0


def _check_anchor(url: str, href: str, file: Path, fragment: str, anchors: dict) -> list[str]:
    if anchors.get(file) is None:  # a page not rendered yet: read its ids from the built file
        refs = _Refs()
        refs.feed(file.read_text(encoding="utf-8"))
        anchors[file] = refs.ids
    if urllib.parse.unquote(fragment) not in anchors[file]:
        return [f"{url}: link {href!r}: no #{fragment} on that page"]
    return []


if __name__ == "__main__":
    sys.exit(main())
