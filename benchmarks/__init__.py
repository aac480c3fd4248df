"""Latency benchmark of nanodet-infer (``python benchmarks/latency.py``; ``nanodet-infer bench``).

Modules: :mod:`.default_model` (the built-in seeded NanoDet-Plus-m 320 and its cache),
:mod:`.torch_reference` (what users run otherwise: the training-side PyTorch model and an
upstream-style torch post-process), :mod:`.report` (Markdown, JSON, plot) and :mod:`.latency` (the
command line). Timing, the synthetic input and the per-engine measurement come from the runtime's
:mod:`nanodet_infer.bench` (what ``nanodet-infer bench`` runs). Not installed with the wheel: a source
checkout runs it.
"""
