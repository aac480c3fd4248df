"""Detector families: one folder per family, plus arithmetic shared between families."""
