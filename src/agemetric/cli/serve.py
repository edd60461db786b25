"""``agemetric serve``: the age of every face in photos over HTTP, for programs in other languages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Literal

import typer

from agemetric.cli._common import err_console, guarded
from agemetric.errors import AgemetricError


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
) -> None:
    """Serve the model over HTTP until Ctrl-C: POST photos to /v1/analyze (multipart field
    "photos", optionally "under") and get every face's box, age and interval as JSON, the same
    JSON `agemetric predict --json` prints. GET / is a page to drop photos on; GET /health says
    the model is loaded; GET /openapi.json and /docs describe the API.

    The model is loaded once; the photos of the requests waiting are framed and estimated
    together, on one thread.
    """
    missing = [name for name in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise AgemetricError(f"agemetric serve needs {', '.join(missing)}: pip install 'agemetric[serve]'")
    import uvicorn

    from agemetric.predictors import load_predictor
    from agemetric.service import create_app

    predictor = load_predictor(model, runtime)
    kind = "run" if hasattr(predictor, "spec") else "bundle"
    app = create_app(predictor, {"model": str(model), "kind": kind}, max_mb)
    err_console.print(f"serving {model} on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
