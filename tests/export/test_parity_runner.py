"""``parity.remembering``: the PyTorch reference runs once per sample although the noise measure and the parity
check both ask for it."""

from __future__ import annotations

import numpy as np
from nanodet_export import parity


def test_each_sample_array_is_run_once():
    calls = []

    def run(x):
        calls.append(x)
        return {"out": x * 2}

    remembered = parity.remembering(run)
    a, b = np.ones(3, np.float32), np.ones(3, np.float32)
    assert remembered(a)["out"].tolist() == [2, 2, 2] and remembered(a) is remembered(a)
    remembered(b)  # an equal but different array is its own sample
    assert len(calls) == 2 and calls[0] is a and calls[1] is b
