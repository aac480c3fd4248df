"""``nanodet-infer``: detect on images/folders/videos, benchmark, and COCO-evaluate an exported model.

Commands::

    nanodet-infer detect PATH... --model M [--save-dir DIR] [--json FILE] [--overwrite] [options]
    nanodet-infer eval --model M --ann instances.json --images DIR [--json FILE] [--overwrite] [options]
    nanodet-infer bench --model M [options]

One module per job: :mod:`.arguments` (parser, ``W,H`` and class-names formats shared with
``nanodet-export``, building the detector), :mod:`.sources` (inputs and the names of annotated
copies), :mod:`.drawing`, :mod:`.outputs` (output-path checks, atomic and streamed writes, shared with
``nanodet-export``), :mod:`.signals` (SIGTERM like Ctrl-C) and :mod:`.commands`.
"""

from .arguments import build_parser
from .commands import main

__all__ = ["build_parser", "main"]
