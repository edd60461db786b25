"""``agemetric serve``: the age of every face in photos over HTTP, for programs in other languages."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from agemetric.cli._common import err_console, guarded
from agemetric.errors import AgemetricError
from agemetric.photos import FRAMING_THREADS

#: seconds between the GIL's hand-overs in the server (Python's default: 0.005)
SWITCH_INTERVAL = 0.0005


@guarded
def serve(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL", help="A run folder written by `agemetric run`, or a bundle from `agemetric export`."
        ),
    ],
    host: Annotated[
        str, typer.Option(help="The address to listen on; 0.0.0.0 to be reachable from other machines.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 8000,
    max_mb: Annotated[float, typer.Option(min=0.01, help="The largest photo accepted, in megabytes.")] = 20.0,
    runtime: Annotated[
        Literal["auto", "torchscript", "onnx"],
        typer.Option(help="For a bundle: auto, torchscript (needs torch) or onnx (needs onnxruntime)."),
    ] = "auto",
    framing_processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            show_default=f"one per core, at most {FRAMING_THREADS}",
            help="The processes that read photos and find their faces; 0: threads of the server's own process.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, show_default="half the cores, at least 1", help="The CPU threads the network runs on."),
    ] = None,
) -> None:
    """Serve the model over HTTP until Ctrl-C: POST photos to /v1/analyze (multipart field
    "photos", optionally "under") and get every face's box, age and interval as JSON, the same
    JSON `agemetric predict --json` prints. GET / is a page to drop photos on; GET /health says
    the model is loaded; GET /openapi.json and /docs describe the API.

    The model is loaded once. Each photo is read and its faces found as its request arrives, in
    one of a few processes (--framing-processes); the faces of the requests waiting are estimated
    together (on --threads).
    """
    missing = [name for name in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise AgemetricError(f"agemetric serve needs {', '.join(missing)}: pip install 'agemetric[serve]'")
    import uvicorn

    from agemetric.photos import set_framing_threads
    from agemetric.predictors import load_predictor
    from agemetric.service import create_app

    # framing and estimating run at once: the framing processes on every core, the network on half
    # of them (with every core, it slowed the framing down); the GIL is handed over more often than
    # Python's 5 ms, so that the estimating thread, which takes it back after each operation of the
    # network, waits less for the event loop (and for framing threads, without framing processes)
    cores = os.cpu_count() or 1
    if framing_processes is None:
        framing_processes = min(cores, FRAMING_THREADS)
    set_framing_threads(max(1, cores // 2))  # used without framing processes
    sys.setswitchinterval(SWITCH_INTERVAL)
    predictor = load_predictor(model, runtime, threads or max(1, cores // 2))
    kind = "run" if hasattr(predictor, "spec") else "bundle"
    app = create_app(predictor, {"model": str(model), "kind": kind}, max_mb, framing_processes)
    err_console.print(f"serving {model} on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
