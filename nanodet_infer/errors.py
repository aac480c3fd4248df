"""The one exception hierarchy of nanodet-infer (runtime and exporter alike).

Every error a user can cause derives from :class:`NanoDetError`, so ``except NanoDetError`` catches all
of them; each subclass also derives from the built-in exception a Python user would expect
(``ValueError``, ``FileNotFoundError``, ...). Messages name the problem *and* the fix.

=============================  =====================  ==================================================
class                          also a                 raised when
=============================  =====================  ==================================================
``NanoDetError``               ``Exception``          base class, never raised directly
``InvalidArgumentError``       ``ValueError``         an option is out of range (thresholds, sizes, ...)
``InvalidImageError``          ``ValueError``         an image is None/empty/wrong dtype/wrong shape
``ImageReadError``             ``OSError``            an image path is missing or not a decodable image
``ImageTooLargeError``         ``OSError``            an image file declares more pixels than the budget
                                                      (subclass of ImageReadError)
``ModelLoadError``             ``OSError``            a model file is missing, unreadable or corrupt
``IncompatibleModelError``     ``ValueError``         a model is not a detector of a supported family,
                                                      or its outputs do not match its metadata
``MetadataError``              ``ValueError``         embedded metadata is missing, malformed or
                                                      inconsistent (subclass of IncompatibleModelError)
``UnsafeModelError``           ``ValueError``         a model holds control flow that can run without
                                                      bound (subclass of IncompatibleModelError)
``BackendUnavailableError``    ``ImportError``        the requested backend package is not installed
``StreamError``                ``OSError``            a camera or stream cannot be opened, stops
                                                      answering (read timeout), or is lost for good
``CheckpointError``            ``ValueError``         a training checkpoint cannot be used (exporter)
``UnsafeCheckpointError``      ``CheckpointError``    a checkpoint needs full unpickling (exporter)
``ExportError``                ``RuntimeError``       export or its parity check failed (exporter)
=============================  =====================  ==================================================
"""

from __future__ import annotations


class NanoDetError(Exception):
    """Base class of every error raised by nanodet-infer and nanodet-export."""


class InvalidArgumentError(NanoDetError, ValueError):
    """An argument is outside its documented range."""


class InvalidImageError(NanoDetError, ValueError):
    """An image array cannot be used (None, empty, wrong dtype or shape)."""


class ImageReadError(NanoDetError, OSError):
    """An image path does not exist or does not decode as an image."""


class ImageTooLargeError(ImageReadError):
    """An image file whose header declares more pixels than the decoding budget (a possible decoder bomb)."""


class ModelLoadError(NanoDetError, OSError):
    """A model file is missing, unreadable, truncated or not a model at all."""


class IncompatibleModelError(NanoDetError, ValueError):
    """A readable model that is not a detector this runtime can run (see :mod:`nanodet_infer.families`)."""


class MetadataError(IncompatibleModelError):
    """Embedded model metadata is missing, malformed or disagrees with the graph."""


class UnsafeModelError(IncompatibleModelError):
    """A model holding constructs that can run without bound (Loop, Scan, TensorIterator); refused unless opted in."""


class BackendUnavailableError(NanoDetError, ImportError):
    """The requested inference backend is not installed."""


class StreamError(NanoDetError, OSError):
    """A camera or network stream cannot be opened, sent nothing within the read timeout, or was lost and
    could not be reopened within the reconnect limit."""


class CheckpointError(NanoDetError, ValueError):
    """A training checkpoint cannot be loaded into the requested architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that can only be read by full unpickling (may run code)."""


class ExportError(NanoDetError, RuntimeError):
    """Export failed, or the exported graph disagrees with PyTorch."""
