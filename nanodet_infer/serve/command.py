"""``nanodet-infer serve``: load the models, bind the socket, run the app on uvicorn, drain on SIGTERM.

SIGTERM (or Ctrl-C) sets the service draining (readiness and new requests answer 503), uvicorn stops
accepting connections and waits up to ``--graceful-timeout`` seconds for the requests in flight, then the
batchers finish what is queued and the process exits with status 143 (130 for Ctrl-C). With ``--ray`` the same
application runs as a Ray Serve deployment instead (:mod:`.ray_serve`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..arguments import check_positive_int
from ..cli.arguments import add_foreign_model_options, foreign_facts
from ..errors import BackendUnavailableError, InvalidArgumentError
from ..images import MAX_IMAGE_PIXELS
from ..safetext import safe_text

PROG = "nanodet-infer serve"


def build_parser() -> argparse.ArgumentParser:
    """The options of ``nanodet-infer serve``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="HTTP detection service: /v1 detect (image in, Detections JSON out), KServe v2 / Open "
        "Inference Protocol (/v2), Prometheus /metrics and a web page at /. Needs pip install nanodet-infer[serve].",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks on errors")
    models = parser.add_argument_group("models")
    models.add_argument("--model", "-m", action="append", required=True,
                        help="exported model (.onnx or OpenVINO .xml); repeat to serve several")
    models.add_argument("--name", action="append", default=None,
                        help="the URL name of each --model, in order (default: the file stem)")
    models.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "openvino"))
    models.add_argument("--threads", type=int, default=None, help="engine threads per model (default: the engine's)")
    models.add_argument("--precision", default="f32", choices=("f32", "bf16", "f16"))
    models.add_argument("--allow-control-flow", action="store_true",
                        help="accept a model with Loop/Scan/TensorIterator (refused by default)")
    add_foreign_model_options(parser)
    network = parser.add_argument_group("network")
    network.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    network.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    bounds = parser.add_argument_group("batching and bounds")
    bounds.add_argument("--max-batch", type=int, default=8, help="images per inference at most (1: no batching)")
    bounds.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long the oldest request waits for others to fill a batch")
    bounds.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting per model; beyond it 503 with Retry-After")
    bounds.add_argument("--max-body-bytes", type=int, default=32 * 2**20, help="request body limit (413 above)")
    bounds.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                        help="largest width x height an image may declare in its header, checked before decoding "
                        f"(413 above; default {MAX_IMAGE_PIXELS:_}, as detect's)")
    bounds.add_argument("--request-timeout", type=float, default=30.0,
                        help="seconds to receive a body (408) and to answer (504)")
    bounds.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="seconds in-flight requests get to finish after SIGTERM")
    parser.add_argument("--no-access-log", action="store_true", help="no JSON access-log line per request on stderr")
    ray = parser.add_argument_group("Ray Serve (pip install nanodet-infer[ray]; docs/serving.md, Past one machine)")
    ray.add_argument("--ray", action="store_true", help="deploy the same application on Ray Serve")
    ray.add_argument("--ray-address", default=None,
                     help="an existing cluster ('auto', HOST:6379 or ray://HOST:10001; default: a local Ray)")
    ray.add_argument("--ray-timeout", type=float, default=None,
                     help="seconds --ray-address may take to answer (default 10)")
    ray.add_argument("--replicas", type=int, default=None, help="a fixed number of replicas (default 1)")
    ray.add_argument("--min-replicas", type=int, default=None,
                     help="autoscaling: fewest replicas (with --max-replicas)")
    ray.add_argument("--max-replicas", type=int, default=None,
                     help="autoscaling: most replicas (with --min-replicas)")
    ray.add_argument("--start-timeout", type=float, default=300.0,
                     help="seconds the replicas may take to start (the model loads in each) before giving up")
    return parser


def _names(args: argparse.Namespace) -> list[str]:
    names = args.name or [Path(m).stem for m in args.model]
    if len(names) != len(args.model):
        raise InvalidArgumentError(f"--name given {len(names)} times for {len(args.model)} --model; give one per model")
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"model names {names} repeat; give each --model its own --name")
    return names


def _limits(args: argparse.Namespace) -> Any:
    from .app import Limits

    for option in ("max_batch", "max_queue", "max_body_bytes", "max_image_pixels"):
        check_positive_int(f"--{option.replace('_', '-')}", getattr(args, option))
    for option in ("max_wait_ms", "request_timeout", "graceful_timeout"):
        value = getattr(args, option)
        if not value >= 0 or (option != "max_wait_ms" and value == 0):
            raise InvalidArgumentError(f"--{option.replace('_', '-')} must be a positive number of seconds/ms")
    return Limits(max_body_bytes=args.max_body_bytes, max_pixels=args.max_image_pixels, max_batch=args.max_batch,
                  max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, request_timeout_s=args.request_timeout)


def load_models(args: argparse.Namespace, limits: Any, on_batch: Any) -> dict[str, Any]:
    """One :class:`ServedModel` (a Detector and its Batcher) per ``--model``; the detector's settings are the
    family's display defaults (``Detector.display_settings``), as for ``detect``."""
    from ..detector import Detector
    from .app import ServedModel
    from .batching import Batcher

    facts = foreign_facts(args)
    served = {}
    for name, path in zip(_names(args), args.model, strict=True):
        detector = Detector(path, backend=args.backend, num_threads=args.threads, precision=args.precision,
                            model_family=args.model_family, allow_control_flow=args.allow_control_flow, **facts)
        defaults = detector.display_settings
        for setting, value in defaults.items():
            setattr(detector, setting, value)
        batcher = Batcher(detector, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms,
                          max_queue=limits.max_queue, on_batch=lambda report, name=name: on_batch(name, report))
        served[name] = ServedModel(name, detector, batcher, defaults)
    return served


def build_service(args: argparse.Namespace, limits: Any) -> tuple[Any, Any]:
    """The models loaded and the ASGI app serving them: ``(app, ServiceState)``; the batchers report to its
    metrics. Used by the local server and by every Ray Serve replica."""
    from .app import build_app

    holder: dict[str, Any] = {}

    def on_batch(name: str, report: Any) -> None:
        metrics = holder["state"].metrics
        metrics.batch_size.labels(name).observe(report.size)
        for wait in report.waits_s:
            metrics.stage_seconds.labels(name, "queue").observe(wait)

    app, state = build_app(load_models(args, limits, on_batch), limits)
    holder["state"] = state
    return app, state


def configure_logging(access_log: bool) -> None:
    """The access log (one JSON line per request) and uvicorn's warnings on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("nanodet_infer.serve.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    access.propagate = False
    errors = logging.getLogger("uvicorn.error")
    errors.addHandler(handler)
    errors.setLevel(logging.WARNING)


RAY_OPTIONS = ("ray_address", "ray_timeout", "replicas", "min_replicas", "max_replicas")


def check_no_ray_options(args: argparse.Namespace) -> None:
    """The Ray Serve options need ``--ray``: refused without it rather than ignored."""
    for option in RAY_OPTIONS:
        if getattr(args, option) is not None:
            raise InvalidArgumentError(f"--{option.replace('_', '-')} needs --ray; add --ray (or drop the option)")


def serve(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM / Ctrl-C; returns the exit status (0 after a graceful drain)."""
    try:
        import uvicorn

        importlib.import_module(".app", __package__)  # Starlette, the multipart parser, prometheus_client
    except ImportError as exc:
        raise BackendUnavailableError(
            f"serve needs the 'serve' extra ({exc.name} is missing): pip install 'nanodet-infer[serve]'"
        ) from None
    limits = _limits(args)
    if args.ray:
        from .ray_serve import serve_on_ray

        return serve_on_ray(args, limits)
    check_no_ray_options(args)
    app, state = build_service(args, limits)
    models = state.models
    configure_logging(not args.no_access_log)
    sock = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    host, port = sock.getsockname()[:2]

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=args.graceful_timeout, timeout_keep_alive=5,
                            limit_concurrency=limits.max_queue * len(models) + 64)
    server = DrainingServer(config)
    names = ", ".join(safe_text(name) for name in models)  # file stems or --name: untrusted text
    print(f"{PROG}: {names} on http://{host}:{port} (Ctrl-C or SIGTERM to stop)", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        for model in models.values():
            model.batcher.close(timeout=args.graceful_timeout)
        sock.close()
    print(f"{PROG}: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str], guarded: Any) -> int:
    """Parse ``argv`` and run :func:`serve` through the CLI's error guard ``guarded(call, verbose)``."""
    args = build_parser().parse_args(list(argv))
    return guarded(lambda: serve(args), args.verbose)
