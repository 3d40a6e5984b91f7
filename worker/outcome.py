"""How a failed attempt ends: which errors fail the job, which are retried, with what code and message.

Torch-free on purpose: out-of-memory is recognised by type name and message, so this module (and its
tests) never import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from compression.errors import InvalidInput, RatioNotReached, TransientError

# Retries for TransientError and storage errors while uploading; attempts are also capped in SQL.
MAX_TRANSIENT_RETRIES = 2
RETRY_BACKOFF_SECONDS = (3, 10)


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    retry: bool = False


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA), MemoryError, or a RuntimeError saying so: the CPU allocator's,
    or ENOMEM's text from a failed mmap (torch maps a safetensors file privately, which counts as
    memory: a model larger than the worker's memory cap fails this way)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def classify(exc: BaseException) -> Failure:
    """Map an exception from compression.run.run (or the upload) to the job's outcome."""
    if is_out_of_memory(exc):
        # Never retried: the same job on the same hardware runs out of memory again.
        return Failure("out_of_memory", f"ran out of memory: {_text(exc)}. Try a smaller model, fewer "
                       "calibration samples or a shorter seq_len, or a worker with more memory.")
    if isinstance(exc, InvalidInput):
        return Failure(_code(exc), str(exc))
    if isinstance(exc, RatioNotReached):
        return Failure("ratio_not_reached", str(exc))
    if isinstance(exc, TransientError):
        return Failure("transient", _text(exc), retry=True)
    # Not the exception's text: it may name this server's paths or hosts, or advise lowering a safety
    # setting (transformers suggests trust_remote_code=True); the worker's log keeps the details.
    return Failure("internal", f"an internal error ({type(exc).__name__}) stopped the job; it is not a "
                   "fault of the request. The operator's worker log has the details")


def _code(exc: BaseException) -> str:
    """InvalidInput -> invalid_input, ModelNotFound -> model_not_found, ..."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
