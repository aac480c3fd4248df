"""The Starlette application of ``nanodet-infer serve``: routes, request bounds, access log and metrics.

Routes (``{name}`` is a served model's name)::

    GET  /                              the web page (choose an image, see it annotated)
    GET  /v1/models                     the served models and their classes
    POST /v1/models/{name}/detect       image (raw body, multipart field "image", or JSON {"image": base64})
                                        -> Detections as JSON (``Detections.to_dict`` rows, COCO rows, timings)
    GET  /v2/health/live | /v2/health/ready | /v2 | /v2/models/{name} | /v2/models/{name}/ready
    POST /v2/models/{name}/infer        Open Inference Protocol (KServe v2) on the network input tensor
    GET  /metrics                       Prometheus text format

Bounds: request bodies above ``max_body_bytes`` get 413 (checked on ``Content-Length`` and while reading); images
declaring more than ``max_pixels`` get 413 before decoding (bytes that are no image, or an image or tensor the model
cannot take: 400, as Triton answers a tensor of the wrong shape); a body not received within ``request_timeout_s``
gets 408 (slow clients); a model's queue holding ``max_queue`` jobs gets 503 with ``Retry-After``; a request not
answered within ``request_timeout_s`` gets 504. While draining for shutdown every new request gets 503 and readiness
is 503.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..arguments import check_setting
from ..errors import ImageReadError, ImageTooLargeError, InvalidArgumentError, InvalidImageError, NanoDetError
from ..images import MAX_IMAGE_PIXELS
from ..results import Detections, foreground
from .batching import Batcher, Overloaded, SettingsKey, ShuttingDown
from .image_bytes import decode_image
from .metrics import Metrics
from .page import PAGE

ACCESS_LOG = logging.getLogger("nanodet_infer.serve.access")
"""One JSON line per request: time, client, method, path, status, milliseconds, bytes sent."""

SETTINGS = ("score_threshold", "iou_threshold", "max_detections")
"""Per-request detection settings (query parameters or JSON fields); absent = the model's display default
(``Detector.display_settings``, what ``detect`` uses)."""


@dataclass(frozen=True)
class Limits:
    """The service's bounds (see the module docstring)."""

    max_body_bytes: int = 32 * 2**20
    max_pixels: int = MAX_IMAGE_PIXELS
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    request_timeout_s: float = 30.0
    retry_after_s: int = 1


@dataclass
class ServedModel:
    """One model: its name, its :class:`~nanodet_infer.Detector` (owned by ``batcher``), its queue and the settings
    a request that gives none gets (``Detector.display_settings``: those of ``detect``)."""

    name: str
    detector: Any
    batcher: Batcher
    defaults: dict[str, Any] = field(default_factory=dict)
    tensor_calls: int = 0  # /v2 infer calls running (bounded by ``Limits.max_queue``)


class HTTPError(Exception):
    """An answer other than 200: status, one-line message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.reason = reason


@dataclass
class ServiceState:
    """What the routes share: the models, the bounds, the metrics and the draining flag."""

    models: dict[str, ServedModel]
    limits: Limits
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False


# ---------------------------------------------------------------------------------------------- helpers
def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _model(state: ServiceState, name: str) -> ServedModel:
    try:
        return state.models[name]
    except KeyError:
        raise HTTPError(404, f"no model named {name!r}; served: {', '.join(sorted(state.models))}") from None


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, at most ``max_body_bytes`` (413 otherwise), received within ``request_timeout_s`` (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise HTTPError(413, f"body of {declared} bytes is over the limit of {limits.max_body_bytes}",
                        reason="too_large")

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise HTTPError(413, f"body is over the limit of {limits.max_body_bytes} bytes", reason="too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), limits.request_timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(408, f"body not received within {limits.request_timeout_s:g} s", reason="timeout") from None


def _settings(values: dict[str, Any], defaults: dict[str, Any]) -> SettingsKey:
    """The detector settings of a request, checked like the :class:`Detector` arguments (400 otherwise); one not
    given is the model's default in ``defaults``."""
    checked = {}
    for name in SETTINGS:
        value = values.get(name)
        if value is None:
            value = defaults.get(name)
        if isinstance(value, str):
            try:
                value = int(value) if name == "max_detections" else float(value)
            except ValueError:
                raise HTTPError(400, f"{name} must be a number, got {value!r}") from None
        checked[name] = check_setting(name, value)
    return tuple(sorted(checked.items()))


def _class_filter(text: Any, class_names: Sequence[str]) -> set[int] | None:
    """``classes``: comma-separated class names or ids (or a JSON list) → class ids; None keeps all."""
    if text is None or text == "":
        return None
    items = text if isinstance(text, list) else str(text).split(",")
    ids = set()
    for item in (str(i).strip() for i in items):
        if item.isdigit() and int(item) < len(class_names):
            ids.add(int(item))
        elif item in class_names:
            ids.add(class_names.index(item))
        else:
            raise HTTPError(400, f"classes: {item!r} is neither a class name nor an id below {len(class_names)}")
    return ids


async def _image_and_options(request: Request, limits: Limits) -> tuple[bytes, dict[str, Any]]:
    """The encoded image and the options of a detect request (query parameters, then form / JSON fields)."""
    options: dict[str, Any] = dict(request.query_params)
    body = await _read_body(request, limits)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        request._body = body  # the form parser reads the body already received (and bounded)
        form = await request.form(max_files=1, max_fields=16, max_part_size=limits.max_body_bytes)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise HTTPError(400, "multipart request without a file field named 'image'")
        options.update({k: v for k, v in form.items() if isinstance(v, str)})
        return await upload.read(), options
    if kind == "application/json":
        try:
            payload = json.loads(body)
            image = base64.b64decode(payload.pop("image"), validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise HTTPError(400, 'JSON body must be {"image": "<base64>", ...settings}') from None
        options.update(payload)
        return image, options
    return body, options


def _detections_json(name: str, result: Detections, timings: dict[str, float]) -> dict[str, Any]:
    """The answer of /v1 detect: ``Detections.to_dict`` (+ COCO rows as ``detect --json`` writes them)."""
    answer = {"model": name, **result.to_dict(), "coco": result.to_coco(0)}
    answer["timings_ms"] = {**(answer["timings_ms"] or {}), **timings}
    return answer


async def _await_job(state: ServiceState, model: ServedModel, image: np.ndarray, settings: SettingsKey) -> Detections:
    limits = state.limits
    retry = {"Retry-After": str(limits.retry_after_s)}
    try:
        future = model.batcher.submit(image, settings)
    except Overloaded:
        raise HTTPError(503, f"model {model.name!r} is at its queue limit of {limits.max_queue}; retry later",
                        retry, reason="queue_full") from None
    except ShuttingDown:
        raise HTTPError(503, "the server is shutting down", retry, reason="shutting_down") from None
    state.metrics.queue_depth.labels(model.name).set(model.batcher.depth)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), limits.request_timeout_s)
    except asyncio.TimeoutError:
        future.cancel()
        raise HTTPError(504, f"no answer within {limits.request_timeout_s:g} s", reason="timeout") from None


# ---------------------------------------------------------------------------------------------- /v1
async def detect(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    model = _model(state, request.path_params["name"])
    started = time.perf_counter()
    data, options = await _image_and_options(request, state.limits)
    settings = _settings(options, model.defaults)
    keep = _class_filter(options.get("classes"), model.detector.metadata.class_names)
    decode_started = time.perf_counter()
    image = await asyncio.to_thread(decode_image, data, state.limits.max_pixels)  # off the event loop
    decode_ms = (time.perf_counter() - decode_started) * 1000
    queued = time.perf_counter()
    result = await _await_job(state, model, image, settings)
    waited_ms = (time.perf_counter() - queued) * 1000
    result = foreground(result)  # as detect --json: no background rows
    if keep is not None:
        result = result[np.isin(result.class_ids, sorted(keep))]
    stages = state.metrics.stage_seconds
    stages.labels(model.name, "decode").observe(decode_ms / 1000)
    if result.timings is not None:
        for stage in ("preprocess", "inference", "postprocess"):
            stages.labels(model.name, stage).observe(getattr(result.timings, f"{stage}_ms") / 1000)
    timings = {"decode": decode_ms, "queue_and_batch": waited_ms, "request": (time.perf_counter() - started) * 1000}
    return JSONResponse(_detections_json(model.name, result, timings))


async def list_models(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    return JSONResponse({"models": [
        {"name": m.name, "model_family": m.detector.metadata.model_family,
         "class_names": list(m.detector.metadata.class_names), "input_size": list(m.detector.input_size)}
        for m in state.models.values()
    ]})


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def metrics(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    for model in state.models.values():
        state.metrics.queue_depth.labels(model.name).set(model.batcher.depth)
    return Response(state.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")


# ---------------------------------------------------------------------------------------------- /v2 (KServe)
async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    return JSONResponse({"ready": not state.draining}, status_code=503 if state.draining else 200)


async def server_metadata(request: Request) -> Response:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("nanodet-infer")
    except PackageNotFoundError:
        ours = "0+unknown"
    return JSONResponse({"name": "nanodet-infer", "version": ours, "extensions": ["binary_tensor_data"]})


def _tensor_meta(name: str, shape: Sequence[int | None]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [-1 if d is None else int(d) for d in shape]}


async def model_metadata(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    model = _model(state, request.path_params["name"])
    backend = model.detector.backend
    return JSONResponse({
        "name": model.name,
        "versions": ["1"],
        "platform": "openvino_ir" if backend.name == "openvino" else "onnxruntime_onnx",
        "inputs": [_tensor_meta(backend.input_name, backend.input_shape)],
        "outputs": [_tensor_meta(n, s) for n, s in zip(backend.output_names, backend.output_shapes, strict=True)],
        "parameters": {"nanodet_metadata": model.detector.metadata.to_properties()},
    })


async def model_ready(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    model = _model(state, request.path_params["name"])
    return JSONResponse({"name": model.name, "ready": not state.draining}, status_code=503 if state.draining else 200)


def _parse_infer_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part and the binary tail (Triton's binary tensor extension) of an infer request."""
    if header_length is None:
        json_part, tail = body, b""
    elif header_length.isdigit() and int(header_length) <= len(body):
        json_part, tail = body[: int(header_length)], body[int(header_length):]
    else:
        raise HTTPError(400, "Inference-Header-Content-Length is not a length within the body")
    try:
        request = json.loads(json_part)
    except ValueError:
        raise HTTPError(400, "the inference request is not JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise HTTPError(400, 'the inference request needs "inputs": [one FP32 tensor]')
    return request, tail


def _input_tensor(spec: dict[str, Any], tail: bytes, max_elements: int) -> np.ndarray:
    if not isinstance(spec, dict) or spec.get("datatype") != "FP32":
        raise HTTPError(400, "the input tensor must have datatype FP32 (the network input, float32 [B, 3, H, W])")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise HTTPError(400, "the input tensor needs a shape of positive integers")
    count = int(np.prod(shape))
    if count > max_elements:
        raise HTTPError(413, f"the input tensor has {count} elements, over the limit of {max_elements}",
                        reason="too_large")
    size = (spec.get("parameters") or {}).get("binary_data_size")
    try:
        if size is not None:
            if size != count * 4 or len(tail) < size:
                raise ValueError
            array = np.frombuffer(tail[:size], dtype="<f4")
        else:
            array = np.asarray(spec.get("data"), dtype=np.float32).reshape(-1)
        return array.reshape(shape).astype(np.float32, copy=False)
    except (ValueError, TypeError):
        raise HTTPError(400, f"the input data does not hold {count} FP32 values for shape {shape}") from None


async def infer(request: Request) -> Response:
    state: ServiceState = request.app.state.service
    model = _model(state, request.path_params["name"])
    limits = state.limits
    body = await _read_body(request, limits)
    parsed, tail = _parse_infer_request(body, request.headers.get("inference-header-content-length"))
    tensor = _input_tensor(parsed["inputs"][0], tail, limits.max_body_bytes // 4)
    backend = model.detector.backend
    if model.tensor_calls >= limits.max_queue:
        raise HTTPError(503, f"model {model.name!r} is at its limit of {limits.max_queue} tensor calls",
                        {"Retry-After": str(limits.retry_after_s)}, reason="queue_full")
    if state.draining:
        raise HTTPError(503, "the server is shutting down", {"Retry-After": str(limits.retry_after_s)},
                        reason="shutting_down")
    model.tensor_calls += 1
    try:
        outputs = await asyncio.wait_for(asyncio.to_thread(backend.run, tensor), limits.request_timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(504, f"no answer within {limits.request_timeout_s:g} s", reason="timeout") from None
    finally:
        model.tensor_calls -= 1
    wanted = [o.get("name") for o in parsed.get("outputs") or [] if isinstance(o, dict)]
    binary = bool((parsed.get("parameters") or {}).get("binary_data_output")) or any(
        (o.get("parameters") or {}).get("binary_data") for o in parsed.get("outputs") or [] if isinstance(o, dict))
    names = wanted or list(backend.output_names)
    unknown = [n for n in names if n not in backend.output_names]
    if unknown:
        raise HTTPError(400, f"unknown outputs {unknown}; the model has {list(backend.output_names)}")
    by_name = dict(zip(backend.output_names, outputs, strict=True))
    answer: dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": []}
    if "id" in parsed:
        answer["id"] = parsed["id"]
    blobs = []
    for name in names:
        array = np.ascontiguousarray(by_name[name], dtype="<f4")
        entry: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": array.nbytes}
            blobs.append(array.tobytes())
        else:
            entry["data"] = array.reshape(-1).tolist()
        answer["outputs"].append(entry)
    head = json.dumps(answer).encode()
    if not binary:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})


# ---------------------------------------------------------------------------------------------- middleware
def _route_label(path: str, models: dict[str, ServedModel]) -> tuple[str, str]:
    """``(route template, model name)`` of a path, so metric labels stay bounded (unknown paths → ``other``)."""
    parts = path.split("/")
    if len(parts) >= 4 and parts[1] in ("v1", "v2") and parts[2] == "models":
        model = parts[3] if parts[3] in models else ""
        return "/".join(parts[:3] + ["{name}"] + parts[4:]), model
    known = {"/", "/v1/models", "/v2", "/v2/health/live", "/v2/health/ready", "/metrics"}
    return (path if path in known else "other"), ""


class ServiceMiddleware:
    """503 while draining (health and metrics still answer), the access log line and the request metrics."""

    def __init__(self, app: Any, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route, model = _route_label(scope["path"], self.state.models)
        status, sent = 500, 0

        async def tracked_send(message: dict) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        health = route in ("/v2/health/live", "/v2/health/ready", "/metrics")
        try:
            if self.state.draining and not health:
                self.state.metrics.rejections.labels(model, "shutting_down").inc()
                retry = {"Retry-After": str(self.state.limits.retry_after_s), "Connection": "close"}
                await _error(503, "the server is shutting down", retry)(scope, receive, tracked_send)
            else:
                await self.app(scope, receive, tracked_send)
        finally:
            elapsed = time.perf_counter() - started
            self.state.metrics.requests.labels(route, model, str(status)).inc()
            self.state.metrics.request_seconds.labels(route).observe(elapsed)
            client = scope.get("client") or ("", 0)
            ACCESS_LOG.info(json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "client": f"{client[0]}:{client[1]}",
                "method": scope.get("method"), "path": scope["path"], "status": status,
                "ms": round(elapsed * 1000, 3), "bytes": sent, "model": model,
            }))


async def _handle_error(request: Request, exc: Exception) -> Response:
    """Typed errors → one-line JSON answers: :class:`HTTPError` as it says, an image over the pixel budget 413,
    other bad input 400 (bytes that are no image, bad settings, an image or tensor the model cannot take: the same on
    /v1 and /v2), anything else the model cannot run 422."""
    state: ServiceState = request.app.state.service
    model = request.path_params.get("name", "")
    model = model if model in state.models else ""
    if isinstance(exc, HTTPError):
        if exc.reason:
            state.metrics.rejections.labels(model, exc.reason).inc()
        return _error(exc.status, str(exc), exc.headers)
    if isinstance(exc, ImageTooLargeError):
        state.metrics.rejections.labels(model, "too_large").inc()
        return _error(413, str(exc))
    bad_input = isinstance(exc, (InvalidArgumentError, ImageReadError, InvalidImageError))
    return _error(400 if bad_input else 422, str(exc))


def build_app(models: dict[str, ServedModel], limits: Limits) -> tuple[Any, ServiceState]:
    """The ASGI application serving ``models`` within ``limits``, and its shared :class:`ServiceState`."""
    state = ServiceState(models=models, limits=limits)
    routes = [
        Route("/", page),
        Route("/v1/models", list_models),
        Route("/v1/models/{name}/detect", detect, methods=["POST"]),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/1", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/1/infer", infer, methods=["POST"]),
        Route("/metrics", metrics),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPError: _handle_error, NanoDetError: _handle_error})
    app.state.service = state
    return ServiceMiddleware(app, state), state
