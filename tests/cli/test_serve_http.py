"""``nanodet-infer serve`` over real HTTP: /v1 detect (raw, multipart, base64 JSON) equals ``Detector`` exactly and
answers the rows of ``detect --json``, KServe v2 with tritonclient's HTTP client and with a request built as the
protocol specifies, dynamic batching, the bounds (413 before decoding, 400, 404), /metrics, the access log and SIGTERM
under load."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from _images import png_declaring
from _serve_server import NAMES, Server, serve_files

from nanodet_infer import Detector
from nanodet_infer.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return serve_files(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(files):
    model, _, background = files
    running = Server("--model", str(model), "--model", str(background), "--max-batch", "4", "--max-wait-ms", "50",
                     "--max-body-bytes", "2000000", "--max-image-pixels", "1000000")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def detector(files):
    return Detector(files[0], backend="onnxruntime", num_threads=1)


def _post(url: str, data: bytes, content_type: str = "application/octet-stream", timeout: float = 60):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _expected(detector, path, **settings):
    for name, value in settings.items():
        setattr(detector, name, value)
    try:
        return detector(cv2.imread(str(path))).to_dict()["detections"]
    finally:
        for name in settings:
            setattr(detector, name, None)


def _multipart(data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "nanodetboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
                 "Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_detect_in_every_body_form_equals_the_detector(server, files, detector) -> None:
    _, images, _ = files
    url = f"{server.url}/v1/models/tiny/detect"
    for path in images:
        data = path.read_bytes()
        want = _expected(detector, path, score_threshold=0.3)
        status, _, raw = _post(f"{url}?score_threshold=0.3", data)
        assert status == 200, raw
        answer = json.loads(raw)
        assert answer["detections"] == want and len(want) > 0
        assert answer["image_size"] == list(cv2.imread(str(path)).shape[1::-1])
        assert len(answer["coco"]) == len(want)
        assert {"preprocess", "inference", "postprocess", "decode", "request"} <= set(answer["timings_ms"])
        body, kind = _multipart(data, {"score_threshold": "0.3"})
        assert json.loads(_post(url, body, kind)[2])["detections"] == want
        payload = json.dumps({"image": base64.b64encode(data).decode(), "score_threshold": 0.3}).encode()
        assert json.loads(_post(url, payload, "application/json")[2])["detections"] == want


def test_settings_and_class_filter(server, files, detector) -> None:
    path = files[1][0]
    want = _expected(detector, path, score_threshold=0.2, iou_threshold=0.5, max_detections=5)
    query = "score_threshold=0.2&iou_threshold=0.5&max_detections=5"
    status, _, raw = _post(f"{server.url}/v1/models/tiny/detect?{query}", path.read_bytes())
    assert status == 200 and json.loads(raw)["detections"] == want
    status, _, raw = _post(f"{server.url}/v1/models/tiny/detect?{query}&classes=dog,2", path.read_bytes())
    assert json.loads(raw)["detections"] == [d for d in want if d["class_name"] in ("dog", "bird")]


def test_concurrent_requests_are_batched_and_exact(server, files, detector) -> None:
    _, images, _ = files
    wants = [_expected(detector, p, score_threshold=0.3) for p in images]
    jobs = [images[i % len(images)] for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda p: _post(f"{server.url}/v1/models/tiny/detect?score_threshold=0.3", p.read_bytes()), jobs))
    for i, (status, _, raw) in enumerate(answers):
        assert status == 200 and json.loads(raw)["detections"] == wants[i % len(images)]
    metrics = _get(f"{server.url}/metrics")[1].decode()
    count = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith('nanodet_batch_size_count{model="tiny"}')))
    total = float(next(line.split()[-1] for line in metrics.splitlines()
                       if line.startswith('nanodet_batch_size_sum{model="tiny"}')))
    assert total > count  # some batch held more than one image


def test_bounds_and_bad_requests_are_one_line_errors(server) -> None:
    url = f"{server.url}/v1/models/tiny/detect"
    status, _, raw = _post(url, png_declaring(20000, 20000))
    assert status == 413 and "pixels" in json.loads(raw)["error"]
    # a body declared over the limit is refused before it is received (the client sends only the headers)
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", parts.path)
    connection.putheader("Content-Length", "3000000")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["error"]
    connection.close()
    assert _post(url, b"not an image")[0] == 400
    ok, elongated = cv2.imencode(".png", np.zeros((1, 2000, 3), np.uint8))  # decodes; scales to 128x0 at 128x128
    status, _, raw = _post(url, elongated.tobytes())
    assert status == 400 and "elongated" in json.loads(raw)["error"]
    assert _post(f"{url}?score_threshold=2", png_declaring(4, 4))[0] == 400
    assert _post(f"{url}?classes=zebra", png_declaring(4, 4))[0] == 400
    assert _post(f"{server.url}/v1/models/nope/detect", b"x")[0] == 404
    assert _post(url, b"{", "application/json")[0] == 400
    metrics = _get(f"{server.url}/metrics")[1].decode()
    assert 'nanodet_rejections_total{model="tiny",reason="too_large"} 2.0' in metrics
    log_lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line["status"] == 413 and line["path"] == "/v1/models/tiny/detect" for line in log_lines)


def test_detect_answers_the_rows_of_detect_json(server, files, tmp_path) -> None:
    """Settings not given are the family's display defaults and background rows are dropped, as for ``detect``: the
    RetinaNet-shaped model's rows differ from the Detector's own defaults in both ways, /v1 matches ``detect --json``
    on the same image and settings, row for row."""
    _, images, background = files
    detector = Detector(background, backend="onnxruntime", num_threads=1)
    path = images[1]
    found = detector(str(path)).labels
    assert {"__background__", "faint"} <= set(found)  # what the display defaults and foreground() take away
    for query, options in (("", []), ("?score_threshold=0.2", ["--score-threshold", "0.2"])):
        out = tmp_path / f"rows{len(options)}.json"
        assert main(["detect", str(path), "--model", str(background), "--backend", "onnxruntime", "--json", str(out),
                     "--no-progress", *options]) == 0
        want = [{k: v for k, v in row.items() if k not in ("file_name", "path")} for row in json.loads(out.read_text())]
        status, _, raw = _post(f"{server.url}/v1/models/background/detect{query}", path.read_bytes())
        assert status == 200, raw
        answer = json.loads(raw)
        assert answer["coco"] == want and len(want) > 0
        labels = {row["class_name"] for row in answer["detections"]}
        assert labels == ({"kept", "faint"} if options else {"kept"})


def test_kserve_v2_with_tritonclient(server, files, detector) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert json.loads(meta["parameters"]["nanodet_metadata"]["nanodet.class_names"]) == list(NAMES)
    tensor = detector.network_input(cv2.imread(str(files[1][0])))[None]
    want = detector.backend.run(tensor)[0]
    for binary in (True, False):
        request = httpclient.InferInput("images", list(tensor.shape), "FP32")
        request.set_data_from_numpy(tensor, binary_data=binary)
        output = httpclient.InferRequestedOutput("output", binary_data=binary)
        result = client.infer("tiny", [request], outputs=[output])
        np.testing.assert_array_equal(result.as_numpy("output"), want)
    client.close()


def test_kserve_v2_json_request_as_the_protocol_specifies(server, files, detector) -> None:
    tensor = detector.network_input(cv2.imread(str(files[1][1])))[None]
    body = json.dumps({"id": "r1", "inputs": [
        {"name": "images", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.reshape(-1).tolist()}]})
    status, _, raw = _post(f"{server.url}/v2/models/tiny/infer", body.encode(), "application/json")
    assert status == 200
    answer = json.loads(raw)
    assert answer["id"] == "r1" and answer["model_name"] == "tiny"
    (output,) = answer["outputs"]
    got = np.asarray(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_array_equal(got, detector.backend.run(tensor)[0])
    bad = json.dumps({"inputs": [{"name": "images", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [1.0]}]})
    assert _post(f"{server.url}/v2/models/tiny/infer", bad.encode(), "application/json")[0] == 400
    channels = json.dumps({"inputs": [{"name": "images", "shape": [1, 4, 8, 8], "datatype": "FP32",
                                       "data": [0.0] * 256}]})  # a tensor the model cannot take: 400, as on /v1
    status, _, raw = _post(f"{server.url}/v2/models/tiny/infer", channels.encode(), "application/json")
    assert status == 400 and "does not fit the model input" in json.loads(raw)["error"]
    assert _get(f"{server.url}/v2/health/live") == (200, b'{"live":true}')


def test_sigterm_under_load_finishes_in_flight_and_loses_nothing(files) -> None:
    model, images, _ = files
    running = Server("--model", str(model), "--max-batch", "4", "--max-wait-ms", "400")
    data = images[0].read_bytes()
    outcomes: list[object] = []
    lock = threading.Lock()
    started = threading.Barrier(9)

    def client() -> None:
        started.wait()
        try:
            status = _post(f"{running.url}/v1/models/tiny/detect", data, timeout=60)[0]
        except (urllib.error.URLError, ConnectionError) as error:  # refused: never accepted
            status = f"refused: {error}"
        with lock:
            outcomes.append(status)

    try:
        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        started.wait()
        threading.Event().wait(0.2)  # the requests are in the batcher's 400 ms window
        code = running.terminate()
        for thread in threads:
            thread.join(60)
    finally:
        running.stop()
    assert code == 143
    assert len(outcomes) == 8
    assert all(o in (200, 503) or str(o).startswith("refused") for o in outcomes), outcomes
    assert outcomes.count(200) >= 1, outcomes  # in-flight requests finished after SIGTERM


def test_slow_client_gets_408_and_the_server_keeps_serving(files) -> None:
    model, images, _ = files
    running = Server("--model", str(model), "--request-timeout", "1")
    try:
        parts = urllib.parse.urlsplit(f"{running.url}/v1/models/tiny/detect")
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.putrequest("POST", parts.path)
        connection.putheader("Content-Length", "1000")
        connection.endheaders(b"\x89PNG")  # 4 of the 1000 bytes promised, then silence
        response = connection.getresponse()
        assert response.status == 408 and "not received within 1 s" in json.loads(response.read())["error"]
        connection.close()
        assert _post(f"{running.url}/v1/models/tiny/detect", images[0].read_bytes())[0] == 200
    finally:
        running.stop()


def test_a_model_name_with_control_characters_is_printed_escaped(files) -> None:
    model, _, _ = files
    running = Server("--model", str(model), "--name", "tiny\x1b[2J\u202e")
    try:
        started = running.log().splitlines()[0]
        assert "\x1b" not in started and "\u202e" not in started and "tiny" in started
    finally:
        running.stop()
