"""Detector families: one sub-package per family, each owning its pre- and post-processing maths."""
