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

import gzip
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


# The pages' bytes kept per API process; a page of 50 is ~55-65 kB (and ~3 kB gzipped).
MAX_PAGE_BYTES = 16 * 1024 * 1024
# Smaller answers go uncompressed: gzip's header and the client's work would outweigh the saving.
GZIP_MIN_BYTES = 1024


class Page:
    """A page's JSON bytes and, made on first request and then kept, their gzip encoding: a page of 50
    finished jobs shrinks ~20x, and sending 60 kB was a quarter of the API's CPU per page
    (the write system call; bench/README.md)."""

    __slots__ = ("body", "_gzipped")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._gzipped: bytes | None = None

    def gzipped(self) -> bytes | None:
        """The gzip encoding, or None where the page is too small to gain from it."""
        if len(self.body) < GZIP_MIN_BYTES:
            return None
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, mtime=0)  # same bytes for the same page
        return self._gzipped


class RenderedPages:
    """Pages per (tenant, filters, limit, cursor), with the rows (id, version, created_at of each job,
    one more than the page when there is a next one) they were assembled from."""

    def __init__(self, max_bytes: int = MAX_PAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        self._pages: dict[Hashable, tuple[Sequence[Any], Page]] = {}

    def get(self, key: Hashable, rows: Sequence[Any]) -> Page | None:
        entry = self._pages.get(key)
        return entry[1] if entry is not None and entry[0] == rows else None

    def put(self, key: Hashable, rows: Sequence[Any], page: Page) -> None:
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1].body)
        if self._bytes + len(page.body) > self.max_bytes:
            self._pages.clear()  # rare: many tenants' lists at once; the next reads assemble again
            self._bytes = 0
        self._pages[key] = (rows, page)
        self._bytes += len(page.body)  # the gzip encoding, when made, adds ~5 % to this
