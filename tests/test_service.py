"""``agemetric serve``: the endpoints in process (FastAPI's test client), bad uploads, concurrent
clients, and the command itself on a real port."""

from __future__ import annotations

import io
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from agemetric.service import create_app
from agemetric.testing import serving


def _png(seed: int, size=(48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory, make_run):
    root = tmp_path_factory.mktemp("serve")
    estimator = make_run(root / "run", interval_level=0.8)
    app = create_app(estimator, {"model": str(root / "run"), "kind": "run"}, max_mb=0.05)
    return estimator, TestClient(app), root


def test_analyze_answers_what_the_library_answers(served):
    estimator, client, root = served
    files = [("photos", ("a.png", _png(0), "image/png")), ("photos", ("b.png", _png(1, (64, 64)), "image/png"))]
    response = client.post("/v1/analyze", files=files, data={"under": "30"})
    assert response.status_code == 200, response.text
    expected = []
    for name, data in (("a.png", _png(0)), ("b.png", _png(1, (64, 64)))):
        (root / name).write_bytes(data)
        (result,) = estimator.analyze(str(root / name), under=30)
        expected.append({**result.to_dict(), "photo": name})
    assert response.json() == {"photos": expected}
    assert response.json()["photos"][0]["faces"][0].keys() == {"box", "age", "low", "high", "p_under", "note"}


def test_health_openapi_and_the_page(served):
    _, client, _ = served
    assert client.get("/health").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "/v1/analyze" in schema["paths"] and "/health" in schema["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "v1/analyze" in page.text


def _bomb() -> bytes:
    """A small PNG of 20,000 x 20,000 pixels: beyond what PIL decodes (a decompression bomb)."""
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "status", "reason"),
    [
        ("empty.jpg", b"", 400, "empty.jpg: the file is empty"),
        ("notes.jpg", b"not a photo at all", 400, "notes.jpg: cannot read image (not an image file"),
        ("huge.png", _png(2, (200, 200)), 413, "huge.png: larger than the limit of 0.05 MB"),
        ("bomb.png", _bomb(), 400, "bomb.png: cannot read image (DecompressionBombError"),
    ],
)
def test_a_bad_upload_is_a_4xx_with_a_reason_and_the_server_keeps_serving(served, name, data, status, reason):
    _, client, _ = served
    response = client.post("/v1/analyze", files=[("photos", (name, data, "image/png"))])
    assert response.status_code == status and response.json()["detail"].startswith(reason)
    good = client.post("/v1/analyze", files=[("photos", ("a.png", _png(0), "image/png"))])
    assert good.status_code == 200 and len(good.json()["photos"]) == 1


def test_bad_requests_name_what_was_expected(served):
    _, client, _ = served
    assert client.post("/v1/analyze").status_code == 422  # no photos field
    too_old = client.post("/v1/analyze", files=[("photos", ("a.png", _png(0), "image/png"))], data={"under": "200"})
    assert too_old.status_code == 422 and "between 0 and 150" in too_old.json()["detail"]


def test_concurrent_clients_get_the_answers_of_one_at_a_time(served):
    _, client, _ = served

    def ask(seed: int) -> dict:
        return client.post("/v1/analyze", files=[("photos", (f"{seed}.png", _png(seed), "image/png"))]).json()

    alone = [ask(seed) for seed in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, [*range(8), *range(8)]))
    assert together == alone + alone


def test_the_command_serves_on_a_port_and_stops_on_ctrl_c(served, tmp_path):
    _, _, root = served
    with (tmp_path / "stderr.txt").open("w") as stderr:
        with serving(root / "run", stop=signal.SIGINT, stderr=stderr) as (server, base):
            answer = httpx.post(base + "/v1/analyze", files=[("photos", ("a.png", _png(0)))], timeout=30)
            assert answer.status_code == 200 and answer.json()["photos"][0]["photo"] == "a.png"
    said = (tmp_path / "stderr.txt").read_text()
    assert f"serving {root / 'run'} on {base}/" in said
    assert server.returncode in (0, 130), said
