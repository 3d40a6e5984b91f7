"""Spectra's compression library.

``from compression import compress`` is the Python API (compression/api.py). It is imported lazily:
``import compression.specs`` must never pull in torch, because the API process validates job bodies
with those models and has no torch installed.
"""

from typing import Any

__all__ = ["compress"]


def __getattr__(name: str) -> Any:
    if name == "compress":
        from compression.api import compress

        return compress
    raise AttributeError(f"module 'compression' has no attribute {name!r}")
