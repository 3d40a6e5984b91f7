"""Errors the library raises. Torch-free, so the API and the worker can map them.

``InvalidInput`` and its subclasses are the caller's fault: the worker fails the job with the
message and never retries. ``TransientError`` is worth a bounded retry (a hub hiccup, a flaky
disk). ``Cancelled`` is raised when ``should_stop()`` answered True between layers.
"""


class SpectraError(Exception):
    """Base class for every error the library raises on purpose."""


class InvalidInput(SpectraError):
    """The request cannot succeed as written; the message says what to change."""


class ModelNotFound(InvalidInput):
    """The model id, revision or local folder does not exist or cannot be read."""


class UnsupportedArchitecture(InvalidInput):
    """The model's architecture is not in the per-architecture table."""


class UnsupportedModelFormat(InvalidInput):
    """The model's files are in a form Spectra does not load: weights only as pickle (never unpickled,
    since unpickling runs code), or a tokenizer that needs the model's own Python code."""


class ModelTooLarge(InvalidInput):
    """The hub model is larger than this server's download limit."""


class InvalidConfig(InvalidInput):
    """config.json (or another of the model's settings files) is unreadable or contradicts the weights."""


class PathNotAllowed(InvalidInput):
    """A local path lies outside the configured allowed roots."""


class DoesNotFit(InvalidInput):
    """The preflight estimate exceeds the memory limits in every execution mode; the message has the numbers."""


class RatioNotReached(SpectraError):
    """The achieved ratio missed the target by more than the tolerance."""


class TransientError(SpectraError):
    """A failure that may go away on retry (network, storage)."""


class Cancelled(SpectraError):
    """The caller asked to stop; raised between layers or steps."""
