"""``nanodet_models.sniff.pickle_names``: the names of a checkpoint's pickle, read without executing it, once per
file version (every family's ``recognise`` asks for the same file)."""

from __future__ import annotations

import os

import torch
from nanodet_models import sniff

genops = sniff.pickletools.genops  # the real one, wrapped below to count the reads


def test_names_are_read_once_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"head.gfl_cls.0.weight": torch.zeros(1)}}, path)
    reads = []
    monkeypatch.setattr(sniff.pickletools, "genops", lambda data: reads.append(1) or genops(data))
    sniff._read_names.cache_clear()
    first = sniff.pickle_names(path)
    assert "head.gfl_cls.0.weight" in first.strings and "collections.OrderedDict" in first.globals
    assert sniff.pickle_names(str(path)) == first and len(reads) == 1  # the same file: not read again
    torch.save({"model": {"backbone.body.conv1.weight": torch.zeros(2)}}, path)
    os.utime(path, ns=(1, 1))  # a rewritten file is a new version even when its size did not change
    second = sniff.pickle_names(path)
    assert len(reads) == 2 and "backbone.body.conv1.weight" in second.strings
    assert "head.gfl_cls.0.weight" not in second.strings


def test_a_missing_or_unreadable_file_names_nothing(tmp_path):
    assert sniff.pickle_names(tmp_path / "missing.pth") == sniff.PickleNames(frozenset(), frozenset())
    (tmp_path / "text.pth").write_text("not a pickle")
    assert sniff.pickle_names(tmp_path / "text.pth").strings == frozenset()

