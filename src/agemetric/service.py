"""``agemetric serve``: ages over HTTP for programs in other languages, on FastAPI.

The model (a run's `AgeEstimator` or an exported `Bundle`) is loaded once. Endpoints:

- ``POST /v1/analyze``: one or more photos (multipart field ``photos``) and optionally ``under``
  (years): ``{"photos": [...]}``, each item the per-face JSON of
  [`PhotoResult.to_dict()`][agemetric.analysis.PhotoResult.to_dict], the same that
  ``agemetric predict --json`` prints;
- ``GET /health``: whether the model is loaded, and what it is;
- ``GET /openapi.json`` and ``GET /docs``: the API described (FastAPI's);
- ``GET /``: a page where a person drops photos and sees them with boxes and ages drawn.

A bad upload (empty, not an image, larger than the limit, a decompression bomb) is answered
with a 4xx and a one-line reason (``{"detail": "..."}``); the server keeps serving. Estimation
runs on one thread: the photos of the requests waiting are framed and estimated together, up to
`BATCH` at a time (as ``agemetric predict`` batches a folder), so concurrent clients share the
network's batches, the memory stays that of one thread, and each request gets the answer it
would get alone.

Needs the ``serve`` extra (``pip install 'agemetric[serve]'``: FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import asyncio
import io
import queue
import threading
from concurrent.futures import Future
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import HTMLResponse

from agemetric._version import __version__
from agemetric.analysis import Predictor, analyze, check_under
from agemetric.errors import AgemetricError

#: the most photos one request may carry
MAX_PHOTOS = 64
#: the most photos (of the requests waiting) estimated together
BATCH = 32


def create_app(predictor: Predictor, description: dict, max_mb: float = 20.0) -> FastAPI:
    """The FastAPI application serving ``predictor``.

    Args:
        predictor: an `AgeEstimator` (with its gallery) or a `Bundle`.
        description: what ``GET /health`` says of the model (e.g. ``{"model": path, "kind": "run"}``).
        max_mb: the largest photo accepted, in megabytes (larger: 413).
    """
    app = FastAPI(
        title="agemetric",
        version=__version__,
        description="The age of every face in photos, by deep metric learning.",
    )
    worker = _Worker(predictor)

    @app.get("/health")
    def health() -> dict:
        """Whether the model is loaded, and what it is."""
        return {"status": "ok", **description}

    @app.post("/v1/analyze")
    async def analyze_photos(
        photos: Annotated[list[UploadFile], File(description="One or more photos (JPEG, PNG, ...).")],
        under: Annotated[float | None, Form(description="Also the probability of being under this age.")] = None,
    ) -> dict:
        """Every face of each photo: its box in the photo's pixels, its age, its interval and,
        with ``under``, the probability of being younger."""
        if not photos:
            raise HTTPException(400, "no photos: send one or more files in the multipart field 'photos'")
        if len(photos) > MAX_PHOTOS:
            raise HTTPException(413, f"{len(photos)} photos in one request; at most {MAX_PHOTOS}")
        try:
            check_under(under)
        except AgemetricError as exc:
            raise HTTPException(422, str(exc)) from None
        files = [await _read_upload(upload, max_mb) for upload in photos]
        results = await asyncio.wrap_future(worker.submit(files, under))
        for result in results:
            if result.error is not None:
                raise HTTPException(400, f"{result.source}: {result.error}")
        return {"photos": [result.to_dict() for result in results]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("agemetric").joinpath("service_page.html").read_text(encoding="utf-8")

    return app


async def _read_upload(upload: UploadFile, max_mb: float) -> io.BytesIO:
    """An upload's bytes as a named in-memory file; empty or over ``max_mb`` megabytes is an error."""
    name, limit = upload.filename or "photo", int(max_mb * 1024 * 1024)
    data = await upload.read(limit + 1)
    if not data:
        raise HTTPException(400, f"{name}: the file is empty")
    if len(data) > limit:
        raise HTTPException(413, f"{name}: larger than the limit of {max_mb:g} MB")
    file = io.BytesIO(data)
    file.name = name
    return file


class _Worker:
    """The one thread that estimates: requests queue their photos; it takes every request waiting
    (up to `BATCH` photos), analyzes their photos together (one call per ``under`` asked) and
    hands each request its own results."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.waiting = predictor, queue.Queue()
        threading.Thread(target=self._run, name="agemetric-estimator", daemon=True).start()

    def submit(self, files: list, under: float | None) -> Future:
        """``files``' `PhotoResult`s, in order, once estimated."""
        future = Future()
        self.waiting.put((files, under, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self.waiting.get()]
            while sum(len(files) for files, _, _ in batch) < BATCH:
                try:
                    batch.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            for under in dict.fromkeys(u for _, u, _ in batch):
                self._answer([request for request in batch if request[1] == under], under)

    def _answer(self, requests: list, under: float | None) -> None:
        try:
            results = analyze(self.predictor, [f for files, _, _ in requests for f in files], under)
        except AgemetricError as exc:  # a photo the framer or the model refuses: answer each request alone
            if len(requests) == 1:
                requests[0][2].set_exception(HTTPException(400, str(exc)))
            else:
                for request in requests:
                    self._answer([request], under)
            return
        start = 0
        for files, _, future in requests:
            future.set_result(results[start : start + len(files)])
            start += len(files)
