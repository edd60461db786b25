"""Processes that read photos and find their faces, for ``agemetric predict`` and ``agemetric serve``.

Face detectors such as dlib's hold Python's GIL for much of their work, so framing threads of
one process share about one core between them. Each framing process has its own GIL and loads
the framer's models once; the faces come back as `agemetric.analysis.FramedPhoto` chips, the
photos' pixels stay in the process (`FramedPhoto.without_image()`). The processes are spawned:
a script that starts them must guard its top level with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

from PIL import Image

from agemetric.analysis import FramedPhoto, Photo, Predictor, frame_photos
from agemetric.errors import AgemetricError
from agemetric.photos import set_framing_threads


class _Framing(NamedTuple):
    """What `frame_photos()` needs of a predictor, sent to each framing process."""

    image_size: int
    framer: object


class FramingProcesses:
    """``count`` processes that read photos and find their faces, each with its own GIL (and the
    framer's models loaded once per process). A process that dies is replaced: the photos it held
    fail (their futures raise ``BrokenProcessPool``), later ones are framed again.

    Args:
        predictor: whose framer and image size frame the photos (its framer must pickle).
        count: how many processes.

    Used as a context manager, the processes stop at its end.

    Examples:
        Frame a folder's photos in two processes while this one estimates their faces (in a
        script, under ``if __name__ == "__main__":``)::

            from agemetric.analysis import analyses

            with FramingProcesses(predictor, 2) as processes:
                for result, _ in analyses(predictor, photo_paths, processes=processes):
                    print(result)
    """

    def __init__(self, predictor: Predictor, count: int):
        framing = _Framing(predictor.image_size, predictor.framer)
        try:
            pickle.dumps(framing)
        except Exception as exc:
            raise AgemetricError(
                f"framing_processes: the model's framer ({type(predictor.framer).__name__}) cannot be sent to "
                f"another process ({type(exc).__name__}); set it to 0 to frame on threads"
            ) from None
        self.count, self.framing = count, framing
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.count,
            multiprocessing.get_context("spawn"),
            initializer=_start_framing,
            initargs=(self.framing, os.getpid()),
        )

    def start(self) -> None:
        """Start every process and have each frame a blank photo (loading the framer's models),
        so that the first photos wait for none of it."""
        warming = [self.pool.submit(_frame_blank, 0.2) for _ in range(self.count)]
        for future in warming:
            future.result()

    def submit(self, photo: Photo, index: int = 0, count: int = 1) -> Future:
        """``[FramedPhoto]`` of ``photo`` (a path, a file object with its bytes, or an image),
        without its pixels (`FramedPhoto.without_image()`); ``index`` of ``count``: its place
        among the photos, for an in-memory image's name."""
        if hasattr(photo, "read"):  # a file object travels as its name and bytes, and is left where it was
            at = photo.tell() if photo.seekable() else None
            data = photo.read()
            if at is not None:
                photo.seek(at)
            job = (_frame_upload, str(getattr(photo, "name", f"image {index}")), data)
        else:
            job = (_frame_one, photo, index, count)
        try:
            return self.pool.submit(*job)
        except BrokenProcessPool:
            self.pool.shutdown(wait=False)
            self.pool = self._new_pool()
            return self.pool.submit(*job)

    def stop(self) -> None:
        """Stop the processes; photos not yet framed are dropped."""
        self.pool.shutdown(cancel_futures=True)

    def __enter__(self) -> FramingProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_framing: _Framing | None = None  # in a framing process: what it frames with


def _start_framing(framing: _Framing, parent: int) -> None:
    """A framing process's start: one framing thread (the process is the unit of parallelism),
    Ctrl-C left to the parent (a terminal sends it to every process of the command; the parent
    stops the framing processes as it stops), and an end when the parent process is gone, even
    killed."""
    global _framing
    _framing = framing
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_framing_threads(1)
    threading.Thread(target=_end_with, args=(parent,), name="agemetric-parent-watch", daemon=True).start()


def _end_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _frame_one(photo: Photo, index: int, count: int) -> list[FramedPhoto]:
    return [framed.without_image() for framed in frame_photos(_framing, [photo], index, count)]


def _frame_upload(name: str, data: bytes) -> list[FramedPhoto]:
    file = io.BytesIO(data)
    file.name = name
    return _frame_one(file, 0, 1)


def _frame_blank(pause: float) -> None:
    """Frame a blank photo, then wait ``pause`` seconds (so that the other processes take the
    other blank photos)."""
    frame_photos(_framing, [Image.new("RGB", (64, 64), (128, 128, 128))])
    time.sleep(pause)
