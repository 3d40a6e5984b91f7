"""Each job's JobOut JSON as PostgreSQL last rendered it, kept per API process and keyed by the row's
version, so a page of jobs costs the database an index scan instead of 50 renderings.

The version is PostgreSQL's `xmin`: the id of the transaction that wrote the row's current tuple.
Every UPDATE writes a new tuple with a new xmin, whichever code path (ORM, Core, a migration, psql)
made it, so a cached text whose version still matches is exactly what rendering the row now would
give; nothing has to remember to invalidate anything. A page (app.api.jobreads.job_page) reads ids
and versions, renders only the jobs that are new or changed since this process last saw them, and
joins the texts. Finished jobs, most of any long list, never change again.

A whole page is kept too (RenderedPages), under the ids and versions its query read: a client polling
an unchanged list gets the same bytes without the page being assembled again. The page query still
runs every time (a new, changed or deleted job changes what it reads), so nothing stale is served.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

# About 1 kB per job: 20000 entries is ~20 MB per API process.
MAX_ENTRIES = 20_000


class RenderedJobs:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._texts: dict[str, tuple[str, str]] = {}  # job id -> (xmin, JSON text)

    def get(self, job_id: str, version: str) -> str | None:
        entry = self._texts.get(job_id)
        return entry[1] if entry is not None and entry[0] == version else None

    def put(self, job_id: str, version: str, text: str) -> None:
        if len(self._texts) >= self.max_entries and job_id not in self._texts:
            self._texts.clear()  # rare; the next pages render again
        self._texts[job_id] = (version, text)


# The pages' bytes kept per API process; a page of 50 is ~55 kB.
MAX_PAGE_BYTES = 16 * 1024 * 1024


class RenderedPages:
    """A page's JSON bytes per (tenant, filters, limit, cursor), with the rows (id, version, created_at
    of each job, one more than the page when there is a next one) they were assembled from."""

    def __init__(self, max_bytes: int = MAX_PAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        self._pages: dict[Hashable, tuple[Sequence[Any], bytes]] = {}

    def get(self, key: Hashable, rows: Sequence[Any]) -> bytes | None:
        entry = self._pages.get(key)
        return entry[1] if entry is not None and entry[0] == rows else None

    def put(self, key: Hashable, rows: Sequence[Any], body: bytes) -> None:
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        if self._bytes + len(body) > self.max_bytes:
            self._pages.clear()  # rare: many tenants' lists at once; the next reads assemble again
            self._bytes = 0
        self._pages[key] = (rows, body)
        self._bytes += len(body)
