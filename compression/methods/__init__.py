"""The registry's content is this import list: one line per method module."""

from compression.methods.base import Compressor, CompressionContext, MethodReport, available, get, register

__all__ = ["Compressor", "CompressionContext", "MethodReport", "available", "get", "register"]

# Method modules register themselves on import. Keep one line per method, in Method order.
