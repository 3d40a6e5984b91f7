"""Spectra's Celery worker: runs compression jobs whose state lives in SQL.

Kept import-light: ``worker.config`` is torch-free so the API's producer can share it.
"""
