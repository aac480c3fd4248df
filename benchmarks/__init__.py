"""Latency benchmark of nanodet-infer (``python benchmarks/latency.py``; ``nanodet-infer bench``).

Modules: :mod:`.default_model` (the built-in seeded NanoDet-Plus-m 320 and its cache),
:mod:`.timing` (timers and statistics), :mod:`.torch_reference` (what users run otherwise: the
training-side PyTorch model and an upstream-style torch post-process), :mod:`.report` (Markdown,
JSON, plot) and :mod:`.latency` (the command line). Not installed with the wheel: a source checkout
runs it.
"""
