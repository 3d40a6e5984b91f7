"""The registry's content is this import list: one line per method module."""

from compression.methods.base import Compressor, CompressionContext, MethodReport, available, get, register

__all__ = ["Compressor", "CompressionContext", "MethodReport", "available", "get", "register"]

# Method modules register themselves on import. Keep one line per method, in Method order.
from compression.methods import grasp  # noqa: E402,F401
from compression.methods import soco  # noqa: E402,F401
from compression.methods import svd  # noqa: E402,F401
from compression.methods import asvd  # noqa: E402,F401
from compression.methods import svd_llm  # noqa: E402,F401
from compression.methods import shortgpt  # noqa: E402,F401
