"""NanoDet-Plus: upstream RangiLyu/nanodet, anchor-free with a DFL box head (see ``family.py``, ``section.py``)."""
