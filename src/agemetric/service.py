"""``agemetric serve``: ages over HTTP for programs in other languages, on FastAPI.

The model (a run's `AgeEstimator` or an exported `Bundle`) is loaded once. Endpoints:

- ``POST /v1/analyze``: one or more photos (multipart field ``photos``) and optionally ``under``
  (years): ``{"photos": [...]}``, each item the per-face JSON of
  `agemetric.analysis.PhotoResult.to_dict()`, the same that
  ``agemetric predict --json`` prints;
- ``GET /health``: whether the model is loaded, and what it is;
- ``GET /openapi.json`` and ``GET /docs``: the API described (FastAPI's);
- ``GET /``: a page where a person drops photos and sees them with boxes and ages drawn.

A bad upload (empty, not an image, larger than the limit, a decompression bomb) is answered
with a 4xx and a one-line reason (``{"detail": "..."}``); the server keeps serving. Each photo is
read and framed as its request arrives, in one of a few framing processes (face detectors such
as dlib's hold Python's GIL for part of their work, which in the server's own process would stop
the network and the network's requests meanwhile; ``framing_processes=0`` frames on threads of
the server's process); one thread estimates the framed faces of the requests waiting together,
up to `BATCH` at a time (as ``agemetric predict`` batches a folder): concurrent clients share
the network's batches, the photos of some requests are framed while the faces of others are
estimated, the memory stays bounded (one network, a fixed set of processes and threads), and each
request gets the answer it would get alone.

Needs the ``serve`` extra (``pip install 'agemetric[serve]'``: FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from agemetric._version import __version__
from agemetric.analysis import FramedPhoto, Predictor, check_under, estimate_photos, frame_photos
from agemetric.errors import AgemetricError
from agemetric.framing_processes import FramingProcesses
from agemetric.photos import framing_threads

#: the most photos one request may carry
MAX_PHOTOS = 64
#: the most photos (of the requests waiting) estimated together
BATCH = 32


def create_app(predictor: Predictor, description: dict, max_mb: float = 20.0, framing_processes: int = 0) -> FastAPI:
    """The FastAPI application serving ``predictor``.

    Args:
        predictor: an `AgeEstimator` (with its gallery) or a `Bundle`.
        description: what ``GET /health`` says of the model (e.g. ``{"model": path, "kind": "run"}``).
        max_mb: the largest photo accepted, in megabytes (larger: 413).
        framing_processes: how many processes read photos and find their faces; ``0``: threads
            of this process (`agemetric.photos.framing_threads()`). The processes start, and
            load the framer's models, when the application starts (its lifespan: a test client
            used as a context manager, or uvicorn), and stop with it.
    """
    framing = FramingProcesses(predictor, framing_processes) if framing_processes else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if framing is not None:
            await asyncio.to_thread(framing.start)
        try:
            yield
        finally:
            if framing is not None:
                framing.stop()

    app = FastAPI(
        title="agemetric",
        version=__version__,
        description="The age of every face in photos, by deep metric learning.",
        lifespan=lifespan,
    )
    estimating = _Estimating(predictor)

    @app.get("/health")
    def health() -> dict:
        """Whether the model is loaded, and what it is."""
        return {"status": "ok", **description}

    @app.post("/v1/analyze")
    async def analyze_photos(
        photos: Annotated[list[UploadFile], File(description="One or more photos (JPEG, PNG, ...).")],
        under: Annotated[float | None, Form(description="Also the probability of being under this age.")] = None,
    ) -> JSONResponse:
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
        photos = await _framed(predictor, files, framing)
        results = await asyncio.wrap_future(estimating.submit(photos, under))
        # plain JSON data already: answered as is, without FastAPI's encoding pass over it
        return JSONResponse({"photos": [result.to_dict() for result in results]})

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


async def _framed(
    predictor: Predictor, files: list[io.BytesIO], processes: FramingProcesses | None
) -> list[FramedPhoto]:
    """``files`` read and framed, each in one of the framing ``processes`` or, without them, on
    one of `agemetric.photos.framing_threads()` (while the faces of other requests are
    estimated); a photo that cannot be read is a 400."""
    if processes is None:
        framing = [framing_threads().submit(frame_photos, predictor, [file]) for file in files]
    else:
        framing = [processes.submit(file) for file in files]
    try:
        photos = [photo for one in await asyncio.gather(*map(asyncio.wrap_future, framing)) for photo in one]
    except AgemetricError as exc:
        raise HTTPException(400, str(exc)) from None
    unread = next((photo for photo in photos if photo.error is not None), None)
    if unread is not None:
        raise HTTPException(400, f"{unread.source}: {unread.error}")
    return photos


@dataclass
class _Job:
    """One request's framed photos, its ``under`` and the future it awaits."""

    photos: list[FramedPhoto]
    under: float | None
    future: Future = field(default_factory=Future)


class _Estimating:
    """The one thread that estimates: it takes the framed photos of every request waiting (up to
    `BATCH`), estimates their faces together (one network call per ``under`` asked) and answers
    each request with its own results."""

    def __init__(self, predictor: Predictor):
        self.predictor, self.waiting = predictor, queue.Queue()
        threading.Thread(target=self._run, name="agemetric-estimating", daemon=True).start()

    def submit(self, photos: list[FramedPhoto], under: float | None) -> Future:
        """``photos``' `PhotoResult`s, in order, once estimated."""
        job = _Job(photos, under)
        self.waiting.put(job)
        return job.future

    def _run(self) -> None:
        while True:
            jobs = [self.waiting.get()]
            while sum(len(job.photos) for job in jobs) < BATCH:
                try:
                    jobs.append(self.waiting.get_nowait())
                except queue.Empty:
                    break
            for under in dict.fromkeys(job.under for job in jobs):
                self._answer([job for job in jobs if job.under == under], under)

    def _answer(self, jobs: list[_Job], under: float | None) -> None:
        """Answer ``jobs``; when estimating them together fails, each alone, so that the face of
        one request the model refuses fails that request only (a 400; anything else a 500)."""
        try:
            results = estimate_photos(self.predictor, [photo for job in jobs for photo in job.photos], under)
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(HTTPException(400, str(exc)) if isinstance(exc, AgemetricError) else exc)
            else:
                for job in jobs:
                    self._answer([job], under)
            return
        for job in jobs:
            job.future.set_result(results[: len(job.photos)])
            results = results[len(job.photos) :]
