"""``nanodet-infer serve``: an HTTP detection service on Starlette + uvicorn (``pip install nanodet-infer[serve]``).

One module per job: :mod:`.image_bytes` (request bytes → image, pixel budget read from the header before
decoding), :mod:`.batching` (dynamic batching with a bounded queue), :mod:`.metrics` (Prometheus),
:mod:`.page` (the web page), :mod:`.app` (routes: /v1 detect, KServe v2, /metrics; bounds; access log) and
:mod:`.command` (options, uvicorn, graceful SIGTERM). Importing this package imports neither Starlette nor uvicorn.
"""
