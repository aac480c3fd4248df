"""``nanodet-infer serve --ray``: the application of ``serve`` as a Ray Serve deployment (the ``ray`` extra).

Every replica builds the very application the local server runs (:func:`.command.build_service`: the same routes,
answers, bounds, batcher and metrics) from the same options and serves it through Ray Serve's HTTP proxy as an ASGI
ingress; the model files are loaded in each replica, from the same absolute path (on a cluster: a path that every
node can read, as for ``detect --ray``). The driver (this process) loads the models once first, so a model that does
not load fails here, with its own message, before Ray starts.

Replicas: ``--replicas N`` (default 1), or ``--min-replicas`` / ``--max-replicas`` for Ray Serve's autoscaler (it
adds a replica when the replicas average more than ``--max-batch`` requests in flight). Each replica reserves
``num_cpus`` logical CPUs (:func:`replica_cpus`): at most its engine threads, and never so many that the most
replicas asked for cannot all be placed (a replica waiting for CPUs would hold the start up until
``--start-timeout``). Ray Serve's controller and proxies reserve no CPU, so nothing else starves.

Back-pressure: a replica takes at most ``--max-queue`` requests at once (``max_ongoing_requests``; its batchers keep
their own ``--max-queue`` bound and 503); each proxy holds at most ``--max-queue`` more (``max_queued_requests``)
and answers 503 with ``Retry-After`` beyond that, Ray's own one-line text answer.

Shutdown: SIGTERM / Ctrl-C deletes the application (Ray lets each replica finish its requests for up to
``--graceful-timeout`` seconds), then stops the local Ray this process started, Serve's controller and proxies with
it (never a cluster's: with ``--ray-address`` only the application is deleted). Ray is imported only here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, ModelLoadError, NanoDetError
from ..safetext import safe_text
from ..scale_out import RAY_CONNECT_TIMEOUT, check_ray_address, native_stderr_silenced, plan_actor_cpus, quiet_ray

APP_NAME = "nanodet-infer"
"""The Ray Serve application name (one ``serve --ray`` per Serve instance: it is served at route ``/``)."""
DEPLOYMENT_NAME = "nanodet"
MAX_CONSTRUCTOR_RETRIES = 3
"""How often Ray Serve tries to start a replica whose constructor fails before the deployment fails."""
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}
"""Ray Serve's own logs: warnings only, no access log of its own (ours is one JSON line per request)."""


class Replica:
    """One Ray Serve replica: the models loaded and the application built from the options (``args``, with
    absolute model paths and the replica's engine threads) within ``limits``. Ray Serve's ingress wrapper serves
    what ``__serve_build_asgi_app__`` returns."""

    def __init__(self, args: argparse.Namespace, limits: Any) -> None:
        from .command import build_service, configure_logging

        configure_logging(not args.no_access_log)
        self._graceful_timeout = args.graceful_timeout
        self._app, self._state = build_service(args, limits)

    def __serve_build_asgi_app__(self) -> Any:
        return self._app

    def __del__(self) -> None:
        """Ray Serve calls this once the replica's requests are done (or ``--graceful-timeout`` passed)."""
        state = getattr(self, "_state", None)
        if state is not None:
            state.draining = True
            for model in state.models.values():
                model.batcher.close(timeout=self._graceful_timeout)


def replica_counts(args: argparse.Namespace) -> tuple[int, int]:
    """``(fewest, most)`` replicas from ``--replicas`` or ``--min-replicas`` / ``--max-replicas`` (equal: fixed)."""
    fixed, low, high = args.replicas, args.min_replicas, args.max_replicas
    if fixed is not None and (low is not None or high is not None):
        raise InvalidArgumentError("give --replicas N or --min-replicas N --max-replicas M, not both")
    if (low is None) != (high is None):
        raise InvalidArgumentError("autoscaling needs both --min-replicas and --max-replicas")
    counts = {"--replicas": 1 if fixed is None else fixed} if low is None else {"--min-replicas": low,
                                                                                "--max-replicas": high}
    for option, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{option} must be an integer >= 1, got {value!r}")
    if low is None:
        return counts["--replicas"], counts["--replicas"]
    if high < low:
        raise InvalidArgumentError(f"--max-replicas {high} is below --min-replicas {low}")
    return low, high


def replica_cpus(cluster_cpus: float, node_cpus: float, replicas: int, threads: int | None) -> float:
    """Logical CPUs each replica reserves: at most ``threads`` (its engine threads; ``None``: no cap), at most the
    CPUs of the largest node ``node_cpus`` (a replica runs on one node), and ``replicas`` of them fit in
    ``cluster_cpus`` (:func:`~nanodet_infer.scale_out.plan_actor_cpus`, no CPU kept back)."""
    cap = min(float(threads) if threads is not None else cluster_cpus, node_cpus)
    share = plan_actor_cpus(cluster_cpus, replicas, max(cap, 1.0), reserve=0.0,
                            option="replicas (--replicas / --max-replicas)")
    return min(share, node_cpus)


def deployment_options(limits: Any, replicas: tuple[int, int], cpus: float, graceful_timeout: float) -> dict[str, Any]:
    """The ``serve.deployment`` options: replicas (fixed, or autoscaling between ``replicas``), CPUs, the
    back-pressure bounds (503 with ``Retry-After``) and the shutdown grace."""
    low, high = replicas
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": cpus},
        "max_ongoing_requests": limits.max_queue,
        "max_queued_requests": limits.max_queue,
        "backpressure_config": {"status_code": 503, "retry_after_s": limits.retry_after_s},
        "graceful_shutdown_timeout_s": graceful_timeout,
        "max_constructor_retry_count": MAX_CONSTRUCTOR_RETRIES,
    }
    if low == high:
        options["num_replicas"] = low
    else:
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": low,
                                         "target_ongoing_requests": limits.max_batch}
    return options


def _replica_args(args: argparse.Namespace, threads: int) -> argparse.Namespace:
    """``args`` for the replicas: absolute model (and class-names file) paths, explicit names and engine threads."""
    from .command import _names

    local = argparse.Namespace(**vars(args))
    local.name = _names(args)
    local.model = [str(Path(m).resolve()) for m in args.model]
    if args.class_names is not None and Path(args.class_names).is_file():
        local.class_names = str(Path(args.class_names).resolve())
    local.threads = threads
    return local


def _check_models_load(args: argparse.Namespace, limits: Any) -> None:
    """Load every model here once (and let it go): a model that does not load fails before Ray starts."""
    from .command import load_models

    for model in load_models(args, limits, lambda name, report: None).values():
        model.batcher.close()


def _http_port(host: str, port: int, local: bool) -> int:
    """The port the proxy listens on: ``port``, or a free one for 0. On this machine it is checked to be free
    (an ``OSError`` naming it otherwise); a cluster's head node is not reachable for that check."""
    if not local:
        if port == 0:
            raise InvalidArgumentError("--port 0 needs a local Ray; give the port the cluster's proxy should use")
        return port
    with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        return probe.getsockname()[1]


def _bounded(call: Any, seconds: float, what: str) -> Any:
    """``call()`` in a daemon thread, waited for at most ``seconds``: its result, its exception, or
    :class:`InvalidArgumentError` naming ``what`` when it is still running (the thread is left to Ray's shutdown)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="nanodet-ray-serve", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise InvalidArgumentError(f"{what} did not finish within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def serve_on_ray(args: argparse.Namespace, limits: Any) -> int:
    """Deploy the application on Ray Serve and serve until SIGTERM / Ctrl-C (a ``KeyboardInterrupt``, after the
    application is torn down). Typed one-line errors for bad options, an address where nothing answers, a model
    that does not load, replicas that cannot start within ``--start-timeout``."""
    from .command import PROG

    replicas = replica_counts(args)
    if not args.start_timeout > 0:
        raise InvalidArgumentError("--start-timeout must be a positive number of seconds")
    check_ray_address(args.ray_address, RAY_CONNECT_TIMEOUT if args.ray_timeout is None else args.ray_timeout)
    local = args.ray_address is None
    port = _http_port(args.host, args.port, local)
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise InvalidArgumentError(
            f"serve --ray needs the 'ray' extra ({exc.name} is missing): pip install 'nanodet-infer[ray]'"
        ) from None
    _check_models_load(args, limits)
    verbose = args.verbose
    if not verbose:
        quiet_ray("ray.serve", core=False)
    started_ray = not ray.is_initialized()
    if started_ray:
        ours = signal.getsignal(signal.SIGTERM)
        try:
            with contextlib.nullcontext() if verbose else native_stderr_silenced():
                ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=not args.no_access_log,
                         logging_level=logging.INFO if verbose else logging.ERROR)
        except ConnectionError as exc:
            if "Authentication" in repr(exc.__cause__):
                raise InvalidArgumentError(
                    f"--ray-address {args.ray_address}: the cluster wants its authentication token; export "
                    "RAY_AUTH_MODE=token with the token in ~/.ray/auth_token or RAY_AUTH_TOKEN (Ray's token-auth docs)"
                ) from None
            raise
        finally:
            signal.signal(signal.SIGTERM, ours)  # ray.init installs its own (sys.exit) over the CLI's Ctrl-C path
    deployed = serving = False
    try:
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
        node_cpus = max(float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive"))
        cpus = replica_cpus(cluster_cpus, node_cpus, replicas[1], args.threads)
        threads = args.threads if args.threads is not None else max(1, math.floor(cpus))
        options = deployment_options(limits, replicas, cpus, args.graceful_timeout)
        serve.start(http_options={"host": args.host, "port": port}, logging_config=SERVE_LOGGING)
        if APP_NAME in serve.status().applications:
            raise InvalidArgumentError(
                f"a Serve application named {APP_NAME!r} is already running on this cluster; stop that "
                f"serve --ray first (or: serve shutdown)"
            )
        replica_args = _replica_args(args, threads)
        deployment = serve.deployment(serve.ingress()(Replica), name=DEPLOYMENT_NAME, **options)
        application = deployment.bind(replica_args, limits)
        deployed = True
        try:
            _bounded(lambda: serve.run(application, name=APP_NAME, route_prefix="/", logging_config=SERVE_LOGGING),
                     args.start_timeout, f"starting {replicas[0]} replica(s) of {cpus:g} CPU each (do the nodes have "
                     "the CPUs free? `ray status` shows what waits)")
        except NanoDetError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray Serve: the deployment failed (a replica constructor kept failing)
            reason = " ".join(str(exc).split())[-300:]
            raise ModelLoadError(f"the replicas did not start on Ray Serve ({reason}); is every model path "
                                 "readable on every node?") from None
        scaling = f"{replicas[0]} replica{'s' if replicas[0] > 1 else ''}" if replicas[0] == replicas[1] else (
            f"{replicas[0]}..{replicas[1]} replicas (autoscaling)")
        names = ", ".join(safe_text(name) for name in replica_args.name)  # file stems or --name
        print(f"{PROG}: {names} on http://{args.host}:{port} (Ray Serve, {scaling} of {cpus:g} CPU and "
              f"{threads} engine threads; Ctrl-C or SIGTERM to stop)", file=sys.stderr, flush=True)
        serving = True
        while True:
            time.sleep(3600)
    finally:
        _tear_down(serve if deployed else None, ray, started_ray, args.graceful_timeout)
        if serving:
            print(f"{PROG}: stopped", file=sys.stderr, flush=True)


def _tear_down(serve: Any, ray: Any, connected: bool, graceful_timeout: float) -> None:
    """Delete the application (bounded: its replicas drain for up to ``graceful_timeout``), then, if this process
    ``connected``, disconnect from Ray: a local Ray it started stops with everything on it (Serve's controller and
    proxy too), a cluster given by ``--ray-address`` keeps running."""
    with contextlib.suppress(Exception):
        if serve is not None:
            _bounded(lambda: serve.delete(APP_NAME), graceful_timeout + 30, "deleting the Serve application")
    if connected:
        with contextlib.suppress(Exception):
            ray.shutdown()
