"""Spectra's compression library.

Deliberately empty: ``import compression.specs`` must never pull in torch, because the
API process validates job bodies with those models and has no torch installed.
"""
