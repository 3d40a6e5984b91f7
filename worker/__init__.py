"""Spectra's Celery worker: runs compression jobs whose state lives in SQL.

The message contract and the sweeper live in the service core (app.messaging, app.sweeper): app/
never imports worker/.
"""
