"""``agemetric serve`` under load, beside ``agemetric predict`` on the same photos.

Starts the service on a free local port and warms it up for 5 seconds; then ``--clients``
threads each post one photo at a time to ``/v1/analyze`` for ``--seconds`` (bodies encoded
beforehand, sent with `http.client`, so that the clients take little CPU time: they report
theirs). Reports photos per second, the server's CPU time per photo, the latency's median and
99th percentile, errors, and the server's resident memory before and after (the server's CPU
time and memory: its process and its framing processes together). Then ``agemetric
predict`` estimates the same photos (``--json``, output discarded; repeated to at least `PREDICTED`
photos, its rate from the time for all of them less the time for the first `WARM`, so that its
start-up is left out) and the two rates
are put side by side. Run it alone on the machine.

Usage::

    python benchmarks/serve_load.py --model runs/face --photos path/to/UTKFace --count 64

``--photos`` is a folder (the first ``--count`` photos in name order are used, read once into
memory); without it, ``--count`` photos of drawn faces are made.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from agemetric.testing import serving

#: photos ``predict`` is timed on first, so that every framing thread has loaded its models
WARM = 8
#: ``predict`` is timed on at least this many photos (the photos repeated)
PREDICTED = 1024


def drawn_photos(folder: Path, count: int) -> list[Path]:
    from agemetric.data import synthetic

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        photo = Image.new("RGB", (480, 360), (90, 110, 140))
        photo.paste(Image.fromarray(synthetic.render(i, 20 + i % 50, i % 2, 0, size=200)), (140, 80))
        out.append(folder / f"drawn-{i:03d}.jpg")
        photo.save(out[-1], quality=90)
    return out


def tree(pid: int) -> list[int]:
    """Process ``pid`` and its descendants (the server and its framing processes)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return [pid, *(p for child in children for p in tree(child))]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its descendants so far."""
    total = 0
    for one in tree(pid):
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its descendants, in MB."""
    total = 0
    for one in tree(pid):
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """A request body posting one photo in the field ``photos``, and its content type."""
    boundary = "agemetric-load-boundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; filename="{name}"\r\n'
    head += "Content-Type: application/octet-stream\r\n\r\n"
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load(base: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` threads posting one photo per request until ``seconds`` pass: latencies, errors.
    The bodies are encoded beforehand and sent with `http.client` over one kept-alive connection
    per client, so that the clients take little of the CPU the server and ``predict`` share."""
    bodies = [multipart(name, data) for name, data in photos]
    host, port = base.removeprefix("http://").split(":")
    latencies, errors, lock = [], [0], threading.Lock()
    end = time.monotonic() + seconds

    def client(start: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        i = start
        while time.monotonic() < end:
            body, kind = bodies[i % len(bodies)]
            began = time.perf_counter()
            connection.request("POST", "/v1/analyze", body, {"Content-Type": kind})
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                errors[0] += response.status != 200
            i += clients
        connection.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a run folder or a bundle")
    parser.add_argument("--photos", type=Path, help="a folder of photos (default: drawn faces)")
    parser.add_argument("--count", type=int, default=64, help="how many photos")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--serve-option",
        action="append",
        default=[],
        help="an option for agemetric serve, e.g. --serve-option=--framing-processes=0 (repeatable)",
    )
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("agemetric"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.photos is None:
            files = drawn_photos(Path(tmp) / "photos", args.count)
        else:
            files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            files = files[: args.count]
        photos = [(f.name, f.read_bytes()) for f in files]
        with serving(args.model, *args.serve_option, stderr=subprocess.DEVNULL) as (server, base):
            load(base, photos, args.clients, 5.0)  # warm up (the first requests of each client)
            before, cpu_before = rss_mb(server.pid), cpu_seconds(server.pid)
            clients_before = time.process_time()
            latencies, errors = load(base, photos, args.clients, args.seconds)
            clients_cpu = time.process_time() - clients_before
            after, served_cpu = rss_mb(server.pid), cpu_seconds(server.pid) - cpu_before
        seconds, cpu = [], []
        # the difference leaves the start-up out (imports, the model, the framer's models on each thread)
        repeated = files * -(-PREDICTED // len(files))  # a few seconds of work: start-up varies by a second
        for some in (files[:WARM], repeated):
            folder = Path(tmp) / f"predict-{len(some)}"  # a folder of links: a short command line
            folder.mkdir()
            for i, file in enumerate(some):
                (folder / f"{i:05d}-{file.name}").symlink_to(file.resolve())
            began, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            command = [exe, "predict", str(args.model), str(folder), "--json"]
            subprocess.run(command, check=True, capture_output=True)
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds.append(time.perf_counter() - began)
            cpu.append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
    served_rate = len(latencies) / args.seconds
    predict_rate = (len(repeated) - WARM) / (seconds[1] - seconds[0])
    predict_cpu = (cpu[1] - cpu[0]) / (len(repeated) - WARM)
    cut = statistics.quantiles(latencies, n=100)
    print(f"model {args.model}, {len(files)} photos, {args.clients} clients for {args.seconds:g} s")
    print(
        "| | photos/s | CPU ms per photo | p50 latency (s) | p99 latency (s) | errors | memory before -> after (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| serve | {served_rate:.2f} | {1000 * served_cpu / len(latencies):.1f} | {statistics.median(latencies):.3f} | "
        f"{cut[98]:.3f} | {errors} | {before:.0f} -> {after:.0f} |"
    )
    print(f"| predict (one process, start-up left out) | {predict_rate:.2f} | {1000 * predict_cpu:.1f} | | | | |")
    print(f"the clients took {1000 * clients_cpu / len(latencies):.1f} ms of CPU per photo")
    print(
        f"serve / predict: {served_rate / predict_rate:.2f} in photos/s, {predict_cpu * len(latencies) / served_cpu:.2f} in CPU per photo"
    )


if __name__ == "__main__":
    main()
