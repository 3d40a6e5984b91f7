"""Prometheus metrics: HTTP requests and latency, jobs by state, job durations, queue depth.

Job figures are read from SQL at scrape time (the database is the source of truth, and several
API processes then report the same numbers). Each app has its own registry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_factory
from app.crud import count_jobs_by_status
from app.jobstates import JobStatus
from app.models import Job, utcnow
from app.queue import queue_depth

log = logging.getLogger(__name__)
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, float("inf"))
DURATION_WINDOW = timedelta(days=1)


class JobCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            with session_factory(self.settings.database_url or "")() as session:
                counts = count_jobs_by_status(session)
                rows = session.execute(
                    select(Job.status, Job.started_at, Job.finished_at).where(
                        Job.finished_at >= utcnow() - DURATION_WINDOW, Job.started_at.is_not(None))
                ).all()
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("metrics: database unavailable: %s", exc)
            up = GaugeMetricFamily("spectra_database_up", "1 when the database answered the scrape")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("spectra_database_up", "1 when the database answered the scrape")
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("spectra_jobs", "Jobs by state", labels=["status"])
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs
        yield self._durations(rows)
        depth = None
        try:
            depth = queue_depth(self.settings)
        except Exception as exc:
            log.warning("metrics: broker unavailable: %s", exc)
        source = "broker"
        if depth is None:  # the embedded broker cannot count cheaply: queued jobs in SQL instead
            depth, source = counts.get(JobStatus.QUEUED.value, 0), "sql"
        queue = GaugeMetricFamily("spectra_queue_depth", "Jobs waiting in the gpu queue", labels=["source"])
        queue.add_metric([source], depth)
        yield queue

    @staticmethod
    def _durations(rows: list) -> HistogramMetricFamily:  # type: ignore[type-arg]
        family = HistogramMetricFamily(
            "spectra_job_duration_seconds", "Run time (started to finished) of jobs finished in the last day",
            labels=["status"],
        )
        by_status: dict[str, list[float]] = {}
        for status, started, finished in rows:
            by_status.setdefault(status, []).append(max(0.0, (finished - started).total_seconds()))
        for status, values in sorted(by_status.items()):
            buckets = [(str(b) if b != float("inf") else "+Inf", sum(1 for v in values if v <= b))
                       for b in DURATION_BUCKETS]
            family.add_metric([status], buckets, sum(values))
        return family


class AppMetrics:
    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("spectra_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("spectra_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(JobCollector(settings))
