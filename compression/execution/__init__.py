"""Layer-by-layer execution: see engine.py."""
