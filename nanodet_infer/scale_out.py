"""Batch detection over large image sets on Ray Data (optional extra ``ray``).

One :class:`~nanodet_infer.Detector` per Ray actor (the model is loaded once per actor), batches of image
*paths* stream through ``Dataset.map_batches``; each actor reads, decodes and detects its images. The
output rows have the schema of ``nanodet-infer detect --json`` (COCO result rows plus ``file_name`` and
``path``), with ``image_id`` numbered exactly as the local command numbers them (readable images in input
order), so the two runs give identical rows.

Nothing here is imported by ``import nanodet_infer``; Ray is imported when a function here is called.

Resources: each actor reserves ``num_cpus`` logical CPUs, at most its ``threads`` and never so many that
the actors together take every CPU of the cluster (:func:`plan_actor_cpus`). Ray Data's own read and
split tasks need a CPU too; with the cluster's CPUs all reserved by actors they never run and the
pipeline hangs (measured on 2 cores: 2 actors x 1 CPU). The engine threads inside an actor stay what
was asked: the reservation is a scheduling share, not a thread count.

Faults: an actor that dies is restarted by Ray (``max_restarts``) and its batch retried
(``max_task_retries``); Ray Data keeps only the output of the attempt that finished, so no image is
lost or duplicated. An image that cannot be read is reported in :attr:`RayRun.errors` and the run goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ImageReadError, InvalidArgumentError, NanoDetError

# Share of one CPU every actor leaves for Ray Data's read/split tasks, whatever the cluster's size.
READ_TASK_RESERVE = 0.5
FAULT_MARKER_ENV = "NANODET_RAY_FAULT_MARKER"
MAX_RESTARTS = 3
"""How often Ray restarts a dead actor (and retries its batch) before the run fails."""
RAY_CONNECT_TIMEOUT = 10.0
"""Seconds :func:`detect_with_ray` waits for a cluster's address to answer before giving up (``--ray-timeout``)."""




@dataclass
class RayRun:
    """What :func:`detect_with_ray` found.

    ``rows``: COCO result rows sorted by ``image_id`` (then score, descending, as the detector returns
    them); ``errors``: ``(path, message)`` for each image that could not be read; ``images``: how many
    images were read and detected on (``image_id`` counts these, in input order, as the local command does).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0


def plan_actor_cpus(cluster_cpus: float, actors: int, threads: float, *, reserve: float = READ_TASK_RESERVE,
                    option: str = "--actors") -> float:
    """Logical CPUs each of ``actors`` actors reserves so that the pipeline can never deadlock.

    At most ``threads`` each, and together at most ``cluster_cpus - reserve`` (:data:`READ_TASK_RESERVE`: Ray
    Data's read/split tasks always find a CPU; Ray Serve's replicas pass 0, its controller and proxies reserve no
    CPU). Raises :class:`InvalidArgumentError` naming ``option`` when the cluster has too few CPUs for that many
    actors (less than 0.05 CPU each).
    """
    if actors < 1 or threads < 1:
        raise InvalidArgumentError(f"actors and threads must be >= 1, got {actors} and {threads}")
    share = min(float(threads), (cluster_cpus - reserve) / actors)
    if share < 0.05:
        kept = f" and {reserve:g} CPU stays free for reading" if reserve else ""
        raise InvalidArgumentError(
            f"{actors} actors do not fit on a cluster of {cluster_cpus:g} CPUs (each needs at least 0.05 CPU{kept}); "
            f"use fewer {option}"
        )
    return math.floor(share * 1000) / 1000  # rounded down: the sum never exceeds the budget


def image_paths(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Files and folders → the sorted image paths the local ``detect`` would process, in its order.

    A folder contributes its images (by suffix, sorted by name, not recursive); a file is taken as given.
    Videos are not supported here (:class:`InvalidArgumentError`): run them with the local ``detect``.
    """
    from .cli.sources import collect_sources  # the local command's expansion rule

    sources = collect_sources([Path(p) for p in inputs]).sources
    videos = [str(s.path) for s in sources if s.is_video]
    if videos:
        raise InvalidArgumentError(f"videos are not supported with Ray ({videos[0]}); run them without --ray")
    return [str(s.path) for s in sources]


class _DetectActor:
    """A Ray Data callable class: one :class:`Detector` per actor; a batch of paths → result rows."""

    def __init__(self, model: str, detector_kwargs: Mapping[str, Any]) -> None:
        from .detector import Detector

        self.detector = Detector(model, **detector_kwargs)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        """``{"index", "path"}`` columns → ``index``, ``path``, ``rows`` (JSON list of result rows, ``image_id`` =
        ``index``) and ``error`` ("" when the image was read)."""
        _fault_once()
        out: dict[str, list[Any]] = {"index": [], "path": [], "rows": [], "error": []}
        for index, path in zip(batch["index"], batch["path"], strict=True):
            rows, error = [], ""
            try:
                found = self.detector(str(path))  # read under the detector's pixel budget
                name = Path(str(path)).name
                rows = [{**row, "file_name": name, "path": str(path)} for row in found.to_coco(int(index))]
            except ImageReadError as exc:
                error = str(exc)
            out["index"].append(int(index))
            out["path"].append(str(path))
            out["rows"].append(json.dumps(rows))
            out["error"].append(error)
        return out


def _fault_once() -> None:
    """Fault injection for the restart test: with ``NANODET_RAY_FAULT_MARKER`` set to a path that does not
    exist yet, the first batch creates that file and kills its own actor process (once per marker)."""
    marker = os.environ.get(FAULT_MARKER_ENV)
    if marker:
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return
        os._exit(1)


def detect_with_ray(
    inputs: Sequence[str | os.PathLike] | Any,
    model: str | os.PathLike,
    *,
    actors: int = 1,
    threads: int = 1,
    batch_size: int = 16,
    address: str | None = None,
    parquet_dir: str | os.PathLike | None = None,
    progress: bool = True,
    connect_timeout: float = RAY_CONNECT_TIMEOUT,
    verbose: bool = False,
    **detector_kwargs: Any,
) -> RayRun:
    """Detect on many images with Ray Data; the same rows as the local ``nanodet-infer detect --json``.

    ``inputs``: image files and/or folders, or a ``ray.data.Dataset`` with a ``path`` column (string
    paths readable by every worker: shared or object storage). ``actors`` Ray actors each hold one
    ``Detector(model, num_threads=threads, **detector_kwargs)``; ``batch_size`` paths go to an actor at a
    time. ``address``: an existing cluster (``"auto"`` or ``"ray://host:10001"``); ``None`` starts a local
    Ray on this machine (or uses the one already initialised in this process). ``parquet_dir``: also write
    one Parquet file per block there (columns ``index`` (position in the sorted input list), ``path``,
    ``rows`` (the image's result rows as a JSON list, ``image_id`` = ``index``), ``error``), keyed by ``path``.
    ``connect_timeout``: seconds the address may take to answer (:func:`check_ray_address`, checked first).

    The model is loaded here first, so a file that does not load fails before any image is read. Ray's own
    log lines are silenced unless ``verbose`` (:func:`quiet_ray`).
    """
    from .detector import Detector

    check_ray_address(address, connect_timeout)
    actors = _positive("actors", actors)
    threads = _positive("threads", threads)
    batch_size = _positive("batch_size", batch_size)
    kwargs = {**detector_kwargs, "num_threads": threads}
    Detector(model, **kwargs)  # fail fast: a model that does not load stops the run before reading

    import ray

    if not verbose:
        quiet_ray()
    if not ray.is_initialized():
        with contextlib.nullcontext() if verbose else native_stderr_silenced():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.INFO if verbose else logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    dataset = _dataset(inputs, ray)
    cpus = plan_actor_cpus(float(ray.cluster_resources().get("CPU", 1.0)), actors, threads)
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for the actor's restart/retry counts yet (the extra pins ray<2.64).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        results = dataset.map_batches(
            _DetectActor,
            fn_constructor_args=(str(model), kwargs),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_RESTARTS,
        )
    if parquet_dir is not None:
        results = results.materialize()
        results.write_parquet(str(parquet_dir))
    run = RayRun()
    for record in sorted(results.iter_rows(), key=lambda r: int(r["index"])):
        if record["error"]:
            run.errors.append((str(record["path"]), str(record["error"])))
            continue
        # numbered like the local command: the count of images read before this one
        run.rows.extend({**row, "image_id": run.images} for row in json.loads(record["rows"]))
        run.images += 1
    return run


def check_ray_address(address: Any, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Refuse a malformed ``address`` and one where nothing answers within ``timeout`` seconds, before Ray is asked
    to connect (Ray itself retries for minutes). ``None``, ``"auto"`` and ``"local"`` are Ray's own and pass; else
    ``HOST:PORT`` or ``ray://HOST:PORT`` (the port is probed with a TCP connection). :class:`InvalidArgumentError`."""
    import socket
    from urllib.parse import urlsplit

    if address is None or address in ("auto", "local"):
        return
    fix = "give 'auto', 'HOST:PORT' (a head node's GCS port, 6379) or 'ray://HOST:PORT' (Ray Client, 10001)"
    text = str(address)
    try:
        parts = urlsplit(text if "://" in text else f"ray-gcs://{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if (not isinstance(address, str) or parts.scheme not in ("ray", "ray-gcs") or not host or port is None
            or parts.path not in ("", "/") or parts.query or parts.username
            or not re.fullmatch(r"[A-Za-z0-9.\-]+|[0-9A-Fa-f:]+", host)):
        raise InvalidArgumentError(f"--ray-address {text[:80]!r} is not a Ray address; {fix}")
    if not (isinstance(timeout, int | float) and 0 < timeout <= 3600):
        raise InvalidArgumentError(f"the Ray connection timeout must be in (0, 3600] seconds, got {timeout!r}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise InvalidArgumentError(
            f"--ray-address {text[:80]!r}: nothing answers at {host}:{port} within {timeout:g} s ({reason}); start "
            "the cluster (ray start --head) or fix the address; --ray-timeout sets the wait"
        ) from None


def quiet_ray(library: str = "ray.data", *, core: bool = True) -> None:
    """Keep Ray's log lines off the terminal: the Python loggers of Ray and of ``library`` (``ray.data``,
    ``ray.serve``, imported here: it configures its logger on import) at ERROR, and with ``core`` its C++ core at
    FATAL (the ``RAY_BACKEND_LOG_LEVEL`` a user sets wins; every Ray process announces that level on stderr, which
    reaches the terminal when worker output is forwarded to the driver, as ``serve --ray`` does for its access log).
    The one error-level line this silences, "has constructor arguments in the object store and max_restarts > 0",
    is about Ray Data's own actor constructor (it passes its map function to every actor by object reference and
    defaults to restartable actors) and does not apply here: that reference lives as long as the run, so a
    restarted actor finds it."""
    if core:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    importlib.import_module(library)
    for name in ("ray", library):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on ``/dev/null`` for the duration (Ray's C++ core announces its log level on stderr
    when it starts); Python exceptions still propagate and are reported by the caller."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _dataset(inputs: Any, ray: Any) -> Any:
    """A Ray Dataset of ``{"index", "path"}`` rows (small: paths only; the workers read the images)."""
    if isinstance(inputs, ray.data.Dataset):
        if "path" not in inputs.schema().names:
            raise InvalidArgumentError("a Ray Dataset given to detect_with_ray needs a 'path' column")
        paths = sorted(str(r["path"]) for r in inputs.select_columns(["path"]).iter_rows())
    else:
        paths = image_paths(inputs)
    if not paths:
        raise NanoDetError("no images to process")
    return ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)])


__all__ = ["MAX_RESTARTS", "RayRun", "detect_with_ray", "image_paths", "plan_actor_cpus"]
