"""Load test of ``nanodet-infer serve`` on loopback: throughput and p50 / p99 latency at 1, 4, 16 and 64
concurrent clients, two servers side by side in one run: with and without dynamic batching, or (``--compare ray``)
the local server and ``serve --ray`` (Ray Serve on a local Ray, ``--replicas``), both batched.

Two servers are started on 127.0.0.1 (ephemeral ports) on the same model: *batched* (``--max-batch`` /
``--max-wait-ms`` as given) and *unbatched* (``--max-batch 1``); with ``--compare ray``, *local* and *ray*, both with
the batching options given. For each concurrency level, the levels and the
two servers interleaved, ``--requests`` POSTs of the same image go to ``/v1/models/{name}/detect`` from that many
client threads (keep-alive connections), bounded by ``--time-limit`` seconds per cell. Every request must end as
200 or 503 (overload, with ``Retry-After``): the counts are checked to add up, so overload loses nothing.

Usage::

    python benchmarks/serve_load.py [--model M.onnx] [--requests 256] [--max-batch 8] [--max-wait-ms 5]
        [--max-queue 64] [--threads N] [--compare batching|ray] [--replicas N] [--json out.json]

Without ``--model``: the built-in seeded NanoDet-Plus-m 320 (``benchmarks.default_model``) exported with a dynamic
batch axis (needs torch to build). A model with a static batch of 1 runs its batches image by image.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nanodet_infer.bench import synthetic_image  # noqa: E402
from nanodet_infer.paths import write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LEVELS = (1, 4, 16, 64)


class ServerProcess:
    """``nanodet-infer serve`` in a subprocess on 127.0.0.1, its URL read from its first line."""

    def __init__(self, options: list[str], timeout: float = 120) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from nanodet_infer.cli import main; sys.exit(main())", "serve",
             "--host", "127.0.0.1", "--port", "0", "--no-access-log", *options],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
        )
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and self.process.poll() is None:
            line = self.process.stderr.readline()
            match = re.search(rb"on (http://127\.0\.0\.1:\d+)", line)
            if match:
                self.url = match.group(1).decode()
                threading.Thread(target=self.process.stderr.read, daemon=True).start()  # keep the pipe drained
                return
        self.stop()
        raise RuntimeError(f"serve did not start: {line.decode(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_cell(url: str, path: str, body: bytes, clients: int, requests: int, time_limit: float) -> dict[str, Any]:
    """``requests`` POSTs from ``clients`` threads (stopping early at ``time_limit``); statuses and latencies."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.perf_counter() + time_limit

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                if issued[0] >= requests or time.perf_counter() > deadline:
                    break
                issued[0] += 1
            started = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": "application/octet-stream"})
                response = connection.getresponse()
                response.read()
                status = str(response.status)
                if response.status == 503 and not response.getheader("Retry-After"):
                    status = "503 without Retry-After"
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=60)
            except (OSError, http.client.HTTPException) as exc:
                status = f"error: {type(exc).__name__}"
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] += 1
                if status == "200":
                    latencies.append(elapsed)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    answered = sum(statuses.values())
    if answered != issued[0] or set(statuses) - {"200", "503"}:
        raise RuntimeError(f"requests lost or failed: issued {issued[0]}, outcomes {dict(statuses)}")
    ms = np.array(latencies) * 1000
    return {
        "clients": clients, "issued": issued[0], "ok": statuses["200"], "rejected_503": statuses["503"],
        "throughput_rps": statuses["200"] / wall,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
    }


def dynamic_default_model() -> Path:
    """The built-in NanoDet-Plus-m 320 exported with a dynamic batch axis (so batching can batch), next to the
    cached default model; exported on first use (needs torch)."""
    from benchmarks.default_model import ensure_default_model, load_torch_model

    paths = ensure_default_model()
    out = paths.folder / "model-dynamic.onnx"
    if not out.is_file():
        import hashlib

        from nanodet_export import export_model
        from nanodet_models import preset

        from benchmarks.default_model import PRESET

        digest = hashlib.sha256(paths.weights.read_bytes()).hexdigest()
        export_model(load_torch_model(paths), preset(PRESET), out, source_sha256=digest, dynamic=True)
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]], labels: tuple[str, str]) -> str:
    """One row per concurrency level: both servers' throughput and latencies, and first / second ratios."""
    one, two = labels
    lines = [
        f"| clients | {one} req/s | {two} req/s | throughput ratio | {one} p50 / p99 ms | "
        f"{two} p50 / p99 ms | p99 ratio | 503s ({one} / {two}) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        b, u = row[one], row[two]
        ratio = b["throughput_rps"] / u["throughput_rps"] if u["throughput_rps"] else None
        p99 = b["p99_ms"] / u["p99_ms"] if b["p99_ms"] and u["p99_ms"] else None
        lines.append(
            f"| {row['clients']} | {b['throughput_rps']:.1f} | {u['throughput_rps']:.1f} | {_fmt(ratio, 2)}x | "
            f"{_fmt(b['p50_ms'])} / {_fmt(b['p99_ms'])} | {_fmt(u['p50_ms'])} / {_fmt(u['p99_ms'])} | "
            f"{_fmt(p99, 2)}x | {b['rejected_503']} / {u['rejected_503']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the built-in NanoDet-Plus-m 320)")
    parser.add_argument("--requests", type=int, default=256, help="requests per cell (per level and server)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per cell at most")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, e.g. 1,4,16,64")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: the engine's)")
    parser.add_argument("--image-size", default="640,480", help="W,H of the synthetic image sent")
    parser.add_argument("--compare", choices=("batching", "ray"), default="batching",
                        help="batched vs unbatched (default), or the local server vs serve --ray (both batched)")
    parser.add_argument("--replicas", type=int, default=1, help="serve --ray replicas (with --compare ray)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.model is None:
        args.model = str(dynamic_default_model())
    width, height = (int(v) for v in args.image_size.split(","))
    body = cv2.imencode(".jpg", synthetic_image((width, height)))[1].tobytes()
    name = Path(args.model).stem
    common = ["--model", args.model, "--max-queue", str(args.max_queue), "--backend", "onnxruntime"]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    batched = [*common, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.compare == "ray":
        options = {"local": batched, "ray": [*batched, "--ray", "--replicas", str(args.replicas)]}
    else:
        options = {"batched": batched, "unbatched": [*common, "--max-batch", "1", "--max-wait-ms", "0"]}
    servers: dict[str, ServerProcess] = {}
    try:
        for label, server_options in options.items():
            servers[label] = ServerProcess(server_options)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    rows = []
    try:
        for clients in (int(v) for v in args.levels.split(",")):
            row: dict[str, Any] = {"clients": clients}
            for label, server in servers.items():
                run_cell(server.url, f"/v1/models/{name}/detect", body, clients, min(8, args.requests), 30)  # warm
                row[label] = run_cell(server.url, f"/v1/models/{name}/detect", body, clients, args.requests,
                                      args.time_limit)
            rows.append(row)
            print(f"clients {clients}: " + json.dumps({k: v for k, v in row.items() if k != "clients"}),
                  file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    print(f"model {Path(args.model).name}, image {width}x{height} JPEG, {os.cpu_count()} CPUs, max batch "
          f"{args.max_batch}, max wait {args.max_wait_ms:g} ms, max queue {args.max_queue}"
          + (f", {args.replicas} Ray Serve replica(s)" if args.compare == "ray" else ""))
    print(markdown(rows, tuple(servers)))
    if args.json is not None:
        write_json(args.json, {"settings": vars(args) | {"json": str(args.json)}, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
