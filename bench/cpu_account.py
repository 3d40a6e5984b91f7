"""CPU seconds spent per component during a scenario, read from /proc (Linux).

On a shared 2-core machine wall-clock latency depends on everybody else's load; CPU time per request
does not, so it tells where a request's cost goes (API processes, PostgreSQL, the load client) and
what throughput the machine could reach if the service had it to itself: cores / CPU per request.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm) ", starting with state


def process_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds (0 once it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def group_pids(pgid: int) -> list[int]:
    """Every process of a process group (uvicorn's supervisor and its spawned workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[2]) == pgid:
                pids.append(int(entry))
    return pids


@dataclass
class Snapshot:
    at: float
    api: dict[int, float]
    postgres: dict[int, float]
    pg_sessions: int
    client: float


class CpuAccount:
    """Snapshots before and after a scenario; the difference is the CPU each component used."""

    def __init__(self, api_pgid: int, admin_dsn: str, database: str) -> None:
        self.api_pgid = api_pgid
        self.database = database
        self._conn = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)

    def close(self) -> None:
        self._conn.close()

    def snapshot(self) -> Snapshot:
        rows = self._conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                  (self.database,)).fetchall()
        sessions = self._conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                      (self.database,)).fetchone()
        return Snapshot(time.perf_counter(), {p: process_cpu(p) for p in group_pids(self.api_pgid)},
                        {int(r[0]): process_cpu(int(r[0])) for r in rows}, int(sessions[0] if sessions else 0),
                        time.process_time())

    def difference(self, before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
        """CPU milliseconds per request by component. PostgreSQL counts backends of this database alive at
        either snapshot: a backend that opened and closed in between is missed (pg_new_sessions shows it)."""
        def used(a: dict[int, float], b: dict[int, float]) -> float:
            return sum(max(0.0, b.get(pid, 0.0) - a.get(pid, 0.0)) for pid in set(a) | set(b))

        n = max(requests, 1)
        wall = after.at - before.at
        api, pg, client = used(before.api, after.api), used(before.postgres, after.postgres), after.client - before.client
        return {"api_cpu_ms_per_req": api * 1000 / n, "pg_cpu_ms_per_req": pg * 1000 / n,
                "client_cpu_ms_per_req": client * 1000 / n, "api_cores": api / wall, "pg_cores": pg / wall,
                "client_cores": client / wall, "pg_new_sessions": after.pg_sessions - before.pg_sessions}
