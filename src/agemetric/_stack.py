"""Where a warning points: the caller's line, past agemetric's own frames."""

from __future__ import annotations

import os
import sys

#: agemetric's own files (the package folder): a warning for the user points past them
AGEMETRIC_FILES = os.path.dirname(os.path.abspath(__file__)) + os.sep


def stacklevel_outside(*places: str) -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the calling function that names the first
    frame whose file is in none of ``places`` (files, or folders ending in a separator): the
    user's line that led there."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(places):
        frame, level = frame.f_back, level + 1
    return level


def torch_files() -> str:
    """torch's own folder (``nn.Module.__call__`` and its hooks, ``torch.no_grad`` as a
    decorator): the frames between agemetric's code and the line that called it. Nothing matches
    when torch is not loaded (a bundle run with onnxruntime)."""
    torch = sys.modules.get("torch")
    if torch is None or not getattr(torch, "__file__", None):
        return "\0"  # no file name starts with it
    return os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
