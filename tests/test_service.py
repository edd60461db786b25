"""``agemetric serve``: the endpoints in process (FastAPI's test client), bad uploads, concurrent
clients, and the command itself on a real port."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from agemetric.errors import AgemetricError
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


def test_framing_processes_give_the_answers_of_framing_threads(served):
    estimator, threads, root = served
    app = create_app(estimator, {"model": str(root / "run"), "kind": "run"}, max_mb=0.05, framing_processes=1)
    files = [("photos", (f"{seed}.png", _png(seed, (40 + seed, 48)), "image/png")) for seed in range(3)]
    with TestClient(app) as processes:  # the lifespan starts the process, and stops it
        answer = processes.post("/v1/analyze", files=files, data={"under": "30"})
        assert answer.status_code == 200
        assert answer.json() == threads.post("/v1/analyze", files=files, data={"under": "30"}).json()
        unread = processes.post("/v1/analyze", files=[("photos", ("notes.jpg", b"not a photo", "image/png"))])
        assert unread.status_code == 400 and unread.json()["detail"].startswith("notes.jpg: cannot read image")


def test_the_service_starts_a_framing_process_again_when_one_dies(served):
    estimator, _, root = served
    app = create_app(estimator, {"model": str(root / "run"), "kind": "run"}, framing_processes=1)
    files = [("photos", ("a.png", _png(0), "image/png"))]
    with TestClient(app, raise_server_exceptions=False) as client:
        expected = client.post("/v1/analyze", files=files).json()
        (framing,) = [pid for pid in _children(os.getpid()) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        os.kill(framing, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _running(framing) and time.monotonic() < deadline:
            time.sleep(0.05)
        statuses = [client.post("/v1/analyze", files=files).status_code for _ in range(2)]
        assert statuses in ([500, 200], [200, 200])  # the request the dead process had, if any, fails
        assert client.post("/v1/analyze", files=files).json() == expected


def test_a_framer_that_cannot_go_to_another_process_is_refused_by_name(served):
    estimator, _, _ = served

    class Unsendable:
        image_size, framer = estimator.image_size, threading.Lock()

    with pytest.raises(AgemetricError, match=r"framing_processes: the model's framer \(lock\) cannot be sent"):
        create_app(Unsendable(), {}, framing_processes=1)


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads a process's children from /proc")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL])
def test_the_command_serves_on_a_port_and_its_framing_processes_end_with_it(served, tmp_path, stop):
    estimator, _, root = served
    with (tmp_path / "stderr.txt").open("w") as stderr:
        with serving(root / "run", "--framing-processes", "2", stop=stop, stderr=stderr) as (server, base):
            answer = httpx.post(base + "/v1/analyze", files=[("photos", ("a.png", _png(0)))], timeout=30)
            (root / "a.png").write_bytes(_png(0))
            (expected,) = estimator.analyze(str(root / "a.png"))
            assert answer.json()["photos"] == [{**expected.to_dict(), "photo": "a.png"}]
            framing = [pid for pid in _children(server.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
            assert len(framing) == 2
    said = (tmp_path / "stderr.txt").read_text()
    assert f"serving {root / 'run'} on {base}/" in said
    if stop == signal.SIGINT:
        assert server.returncode in (0, 130), said
    deadline = time.monotonic() + 10  # killed, the server cannot stop them: they notice it is gone
    while any(map(_running, framing)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in framing if _running(pid)]


def test_ctrl_c_on_a_terminal_stops_the_server_and_its_framing_processes_quietly(served, tmp_path):
    """A terminal sends Ctrl-C to every process of the command: the framing processes leave it to
    the server, which stops them (no traceback from them)."""
    _, _, root = served
    with (tmp_path / "stderr.txt").open("w") as stderr:
        with serving(root / "run", stderr=stderr, start_new_session=True) as (server, base):
            assert (
                httpx.post(base + "/v1/analyze", files=[("photos", ("a.png", _png(0)))], timeout=30).status_code == 200
            )
            framing = [pid for pid in _children(server.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
            os.killpg(server.pid, signal.SIGINT)  # the server leads its own process group, as on a terminal
            server.wait(timeout=30)
    said = (tmp_path / "stderr.txt").read_text()
    assert server.returncode in (0, 130) and "Traceback" not in said and "KeyboardInterrupt" not in said, said
    assert not [pid for pid in framing if _running(pid)]


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie, ended but not yet reaped, has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped between the open and the read
        return False
