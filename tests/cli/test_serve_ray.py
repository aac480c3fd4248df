"""``nanodet-infer serve --ray`` on a local Ray cluster, for real: the same /v1 and /v2 answers as ``Detector`` and
``detect --json``, the same bounds, Ray Serve's back-pressure as 503 with ``Retry-After``, and SIGTERM tearing the
application and the local cluster down (no Ray process left). One server for the module: Ray takes ~15 s to start.
The option checks run without Ray."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import psutil
import pytest
from _images import png_declaring
from _serve_server import REPO, Server, serve_files
from test_serve_http import _expected, _get, _post

from nanodet_infer import Detector
from nanodet_infer.cli import main

RAY_START_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return serve_files(tmp_path_factory.mktemp("serve-ray"))


@pytest.fixture(scope="module")
def ray_server(files):
    """``serve --ray`` with autoscaling bounds (1..2 replicas of 1 CPU: both fit on 2 cores) and tight queues: a
    replica takes 2 requests at once and the proxy queues 2 more (--max-queue 2); a lone request waits 200 ms for
    a batch."""
    pytest.importorskip("ray.serve")
    model, _, background = files
    running = Server("--ray", "--model", str(model), "--model", str(background), "--min-replicas", "1",
                     "--max-replicas", "2", "--max-queue", "2", "--max-batch", "4", "--max-wait-ms", "200",
                     "--max-image-pixels", "1000000", start_timeout=RAY_START_TIMEOUT_S)
    yield running
    if running.process.poll() is None:  # the SIGTERM test did not run: stop it the same way (Ray's processes go too)
        running.terminate(timeout=120)
    running.stop()


@pytest.fixture(scope="module")
def detector(files):
    return Detector(files[0], backend="onnxruntime", num_threads=1)


@pytest.mark.slow
def test_v1_and_v2_answer_as_the_detector(ray_server, files, detector, tmp_path) -> None:
    _, images, background = files
    url = ray_server.url
    for path in images:
        status, _, raw = _post(f"{url}/v1/models/tiny/detect?score_threshold=0.3", path.read_bytes())
        assert status == 200, raw
        want = _expected(detector, path, score_threshold=0.3)
        assert json.loads(raw)["detections"] == want and len(want) > 0
    out = tmp_path / "rows.json"
    assert main(["detect", str(images[1]), "--model", str(background), "--backend", "onnxruntime", "--json",
                 str(out), "--no-progress"]) == 0
    want = [{k: v for k, v in row.items() if k not in ("file_name", "path")} for row in json.loads(out.read_text())]
    answer = json.loads(_post(f"{url}/v1/models/background/detect", images[1].read_bytes())[2])
    assert answer["coco"] == want and len(want) > 0
    tensor = detector.network_input(cv2.imread(str(images[2])))[None]
    body = json.dumps({"id": "r", "inputs": [
        {"name": "images", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.reshape(-1).tolist()}]})
    status, _, raw = _post(f"{url}/v2/models/tiny/infer", body.encode(), "application/json")
    assert status == 200
    (output,) = json.loads(raw)["outputs"]
    got = np.asarray(output["data"], np.float32).reshape(output["shape"])
    np.testing.assert_array_equal(got, detector.backend.run(tensor)[0])
    assert _get(f"{url}/v2/health/ready") == (200, b'{"ready":true}')
    assert [m["name"] for m in json.loads(_get(f"{url}/v1/models")[1])["models"]] == ["tiny", "background"]
    assert b"nanodet_requests_total" in _get(f"{url}/metrics")[1]


@pytest.mark.slow
def test_bounds_answer_as_the_local_server(ray_server) -> None:
    url = f"{ray_server.url}/v1/models/tiny/detect"
    status, _, raw = _post(url, png_declaring(20000, 20000))
    assert status == 413 and "pixels" in json.loads(raw)["error"]
    assert _post(url, b"not an image")[0] == 400
    assert _post(f"{url}?score_threshold=2", png_declaring(4, 4))[0] == 400
    assert _post(f"{ray_server.url}/v1/models/nope/detect", b"x")[0] == 404


@pytest.mark.slow
def test_back_pressure_is_503_with_retry_after(ray_server, files) -> None:
    data = files[1][0].read_bytes()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: _post(f"{ray_server.url}/v1/models/tiny/detect", data), range(12)))
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    assert all({k.lower(): v for k, v in headers.items()}.get("retry-after") == "1"
               for status, headers, _ in answers if status == 503)


@pytest.mark.slow
def test_a_second_serve_on_the_cluster_is_refused_and_leaves_the_first_serving(ray_server, files) -> None:
    """``--ray-address`` to a running cluster (the module server's own local Ray): the name is taken, so a one-line
    error and status 2, and the first application still answers (the second driver only disconnects)."""
    processes = psutil.Process(ray_server.process.pid).children(recursive=True)
    address = next(arg.split("=", 1)[1] for p in processes for arg in p.cmdline() if arg.startswith("--gcs-address="))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_MODE": "token"}  # the local Ray has token authentication on (its token in ~/.ray/auth_token)
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from nanodet_infer.cli import main; sys.exit(main())", "serve",
         "--ray", "--ray-address", address, "--model", str(files[0]), "--backend", "onnxruntime", "--port", "8999"],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1].endswith("stop that serve --ray first (or: serve shutdown)")
    assert "Traceback" not in run.stderr, run.stderr
    assert _post(f"{ray_server.url}/v1/models/tiny/detect", files[1][0].read_bytes())[0] == 200


@pytest.mark.slow
def test_sigterm_tears_down_the_application_and_the_local_cluster(ray_server) -> None:
    ray_processes = psutil.Process(ray_server.process.pid).children(recursive=True)
    assert ray_processes  # the local cluster: GCS, raylet, workers, Serve's controller, proxy and replica
    started = time.monotonic()
    assert ray_server.terminate(timeout=120) == 143
    stopped_s = time.monotonic() - started
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, [p.info for p in alive]
    log = ray_server.log()
    assert "nanodet-infer serve: stopped" in log and "Traceback" not in log, log
    print(f"serve --ray stopped {stopped_s:.1f} s after SIGTERM")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--replicas", "2"], "--replicas needs --ray"),
        (["--ray", "--replicas", "2", "--min-replicas", "1", "--max-replicas", "3"], "not both"),
        (["--ray", "--min-replicas", "1"], "both --min-replicas and --max-replicas"),
        (["--ray", "--min-replicas", "3", "--max-replicas", "2"], "below --min-replicas 3"),
        (["--ray", "--replicas", "0"], "--replicas must be an integer >= 1"),
        (["--ray", "--ray-address", "host"], "is not a Ray address"),
    ],
)
def test_bad_ray_options_are_one_line_exit_2(options, message, capsys) -> None:
    assert main(["serve", "--model", "missing.onnx", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_address_where_nothing_answers_fails_fast(files, capsys) -> None:
    started = time.monotonic()
    code = main(["serve", "--model", str(files[0]), "--ray", "--ray-address", f"127.0.0.1:{_free_port()}",
                 "--ray-timeout", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing answers" in err[0], err
    assert time.monotonic() - started < 60  # a bound against a hang, not a speed target


@pytest.mark.parametrize(
    ("cluster", "node", "replicas", "threads", "expected"),
    [
        (2, 2, 1, None, 2.0),  # one replica takes the machine
        (2, 2, 2, None, 1.0),
        (2, 2, 3, None, 0.666),  # rounded down: 3 x 0.666 fit in 2
        (2, 2, 1, 1, 1.0),  # never more than its engine threads
        (64, 16, 1, None, 16.0),  # one replica lives on one node
        (64, 16, 8, 4, 4.0),
    ],
)
def test_replica_cpus_let_the_most_replicas_fit(cluster, node, replicas, threads, expected) -> None:
    from nanodet_infer.serve.ray_serve import replica_cpus

    cpus = replica_cpus(cluster, node, replicas, threads)
    assert cpus == expected
    assert cpus * replicas <= cluster and cpus <= node


def test_deployment_options_fixed_and_autoscaling() -> None:
    from nanodet_infer.serve.app import Limits
    from nanodet_infer.serve.ray_serve import deployment_options

    limits = Limits(max_queue=16, max_batch=8, retry_after_s=1)
    fixed = deployment_options(limits, (2, 2), 1.0, 30.0)
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0}
    assert fixed["max_ongoing_requests"] == fixed["max_queued_requests"] == 16
    assert fixed["backpressure_config"] == {"status_code": 503, "retry_after_s": 1}
    scaling = deployment_options(limits, (1, 4), 0.5, 30.0)
    assert "num_replicas" not in scaling
    assert scaling["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                             "target_ongoing_requests": 8}
