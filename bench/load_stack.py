"""The service under load for bench/api_load.py: a throwaway PostgreSQL database (migrated with
`spectra migrate`), a Redis db number of its own, uvicorn with N workers, and later one real Celery
worker. Everything is created here and removed on exit, whatever happens.

Reuses the service tests' process helpers (tests/service/support/processes.py): each child runs in its
own process group with a log file and is killed group-wide at the end.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.db import libpq_dsn  # noqa: E402
from tests.service.support.processes import Process, free_port, start_worker, wait_until  # noqa: E402

POSTGRES_URL = os.environ.get("SPECTRA_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = "redis://127.0.0.1:6379"
# Per-key limit far above anything the bench can send (the limiter still runs, it just never trips).
BENCH_RATE_LIMIT_PER_MINUTE = 100_000_000
SHARED = REPO.parent / "shared"


@dataclass
class Service:
    base_url: str
    api_key: str
    database_url: str
    broker_url: str
    env: dict[str, str]
    home: Path
    api: Process
    api_workers: int

    @property
    def database_name(self) -> str:
        return str(make_url(self.database_url).database)

    @property
    def admin_dsn(self) -> str:
        return libpq_dsn(POSTGRES_URL)

    def api_pids(self) -> list[int]:
        """The processes serving requests: uvicorn's spawned workers, or the server itself (1 worker)."""
        done = subprocess.run(["pgrep", "-P", str(self.api.pid)], capture_output=True, text=True)
        # uvicorn --workers spawns `spawn_main` children; bench/reuseport_api.py starts `--one` ones.
        workers = [int(p) for p in done.stdout.split() if any(m in _cmdline(int(p)) for m in ("spawn_main", "--one"))]
        return workers or [self.api.pid]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextmanager
def throwaway_database() -> Iterator[str]:
    name = f"spectra_bench_{secrets.token_hex(5)}"
    admin = libpq_dsn(POSTGRES_URL)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL is not reachable at {POSTGRES_URL} "
                           f"(set SPECTRA_BENCH_POSTGRES_URL): {exc}") from exc
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        from app.core.db import dispose_engines

        dispose_engines()
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# What Celery/kombu (queue 'gpu') and the API's shared rate limiter keep in the broker db: the only keys
# this bench removes.
QUEUE_KEY_PATTERNS = ("gpu", "gpu\x06*")  # the waiting messages (and their priority lists)
BROKER_KEY_PATTERNS = (*QUEUE_KEY_PATTERNS, "_kombu.*", "unacked*", "spectra:ratelimit:*")


def clear_broker_keys(client: redis.Redis, patterns: tuple[str, ...] = BROKER_KEY_PATTERNS) -> None:
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)


def _unused(client: redis.Redis) -> bool:
    """No keys but kombu's queue bindings, which Celery leaves behind in every db it has used (the
    service tests' brokers do) and which name only the gpu queue this bench uses too."""
    return all(key.startswith(b"_kombu.binding") for key in client.scan_iter(count=100))


@contextmanager
def redis_db() -> Iterator[str]:
    """An unused Redis db: SPECTRA_BENCH_REDIS_URL if set, else the highest unused one of 1-15. The service
    tests pick random dbs too, so the bench never flushes a db: it removes only the Celery keys."""
    explicit = os.environ.get("SPECTRA_BENCH_REDIS_URL")
    candidates = [explicit] if explicit else [f"{REDIS_BASE}/{n}" for n in range(15, 0, -1)]
    chosen = None
    for url in candidates:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            if _unused(client):
                chosen = client, url
                break
        except redis.ConnectionError as exc:
            raise RuntimeError(f"Redis is not reachable at {url} (set SPECTRA_BENCH_REDIS_URL): {exc}") from exc
        client.close()
    if chosen is None:
        raise RuntimeError(f"no unused Redis db among {', '.join(candidates)}; set SPECTRA_BENCH_REDIS_URL to one")
    client, url = chosen
    try:
        yield url
    finally:
        clear_broker_keys(client)
        client.close()


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"spectra migrate failed:\n{done.stdout}\n{done.stderr}")


def service_env(home: Path, hf_home: Path, database_url: str, broker_url: str, port: int) -> dict[str, str]:
    """Production defaults (heartbeat, stale-after, body limit, ...) except the raised rate limit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECTRA_")}
    env.update({
        "SPECTRA_HOME": str(home), "SPECTRA_DATABASE_URL": database_url, "SPECTRA_BROKER_URL": broker_url,
        "SPECTRA_PUBLIC_URL": f"http://127.0.0.1:{port}", "SPECTRA_SIGNING_SECRET": secrets.token_hex(16),
        "SPECTRA_RATE_LIMIT_PER_MINUTE": str(BENCH_RATE_LIMIT_PER_MINUTE),
        "SPECTRA_DATA_DIR": str(SHARED / "data"),
        "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
    })
    return env


def seed(database_url: str, jobs: int, job_spec: dict[str, object]) -> str:
    """A 'load' tenant with `jobs` finished jobs (and a neighbour tenant with as many); returns its key."""
    from sqlalchemy import update

    from app import crud
    from app.core.db import session_scope
    from app.models import Job, utcnow
    from compression.specs import JobSpec

    spec = JobSpec.model_validate(job_spec).model_dump(mode="json")
    with session_scope(database_url) as session:
        _, key = crud.create_api_key(session, tenant_name="load")
        crud.create_api_key(session, tenant_name="neighbour")
        for name in ("load", "neighbour"):
            tenant = crud.get_or_create_tenant(session, name=name)
            for _ in range(jobs):
                crud.create_job(session, tenant_id=tenant.id, spec=spec)
        now = utcnow()
        # Finished jobs with metrics, like a service that has been used; none is left for a worker.
        session.execute(update(Job).values(status="succeeded", started_at=now, finished_at=now, attempts=1,
                                           metrics={"ppl_before": 30.1, "ppl_after": 41.7, "achieved_ratio": 0.2},
                                           progress_stage="export", progress_fraction=1.0))
    return key


def _healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_service(*, api_workers: int, seed_jobs: int, job_spec: dict[str, object],
                    app_factory: str = "app.main:create_app", listen: str = "reuseport",
                    settings: dict[str, str] | None = None) -> Iterator[Service]:
    """listen: "reuseport" (a socket per process, bench/reuseport_api.py) or "shared" (uvicorn --workers);
    settings: SPECTRA_* overrides for the service, e.g. {"SPECTRA_AUTH_CACHE_SECONDS": "0"}."""
    with ExitStack() as own:
        database_url = own.enter_context(throwaway_database())
        broker_url = own.enter_context(redis_db())
        home = Path(own.enter_context(tempfile.TemporaryDirectory(prefix="spectra-bench-")))
        hf_home = home / "hf"
        from tests.support.hf_cache import seed_hf_cache

        seed_hf_cache(hf_home)
        port = free_port()
        env = service_env(home, hf_home, database_url, broker_url, port)
        env.update(settings or {})
        migrate(env)
        key = seed(database_url, seed_jobs, job_spec)
        server = [app_factory, "--factory", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                  "--no-access-log"]
        if listen == "reuseport":
            command = [sys.executable, str(REPO / "bench" / "reuseport_api.py"), app_factory, "--host", "127.0.0.1",
                       "--port", str(port), "--processes", str(api_workers), "--backlog", "2048"]
        else:
            command = [sys.executable, "-m", "uvicorn", *server, "--host", "127.0.0.1", "--port", str(port),
                       "--workers", str(api_workers), "--backlog", "2048"]
        api = Process("api", command, env, home / "logs")
        own.callback(api.stop)
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(base_url), 60, "the API", process=api)
        yield Service(base_url, key, database_url, broker_url, env, home, api, api_workers)


def drain_queue(service: Service) -> int:
    """Forget what the HTTP phases queued: cancel those rows and empty the broker db, so the worker
    started next sees only the queue-latency jobs (its sweeper would re-send queued rows otherwise)."""
    from sqlalchemy import update

    from app.core.db import session_scope
    from app.models import Job

    with session_scope(service.database_url) as session:
        cancelled = session.execute(update(Job).where(Job.status == "queued").values(status="cancelled")).rowcount
    client = redis.Redis.from_url(service.broker_url)
    # Only the messages: the exchange bindings must stay, or the producer's later sends go nowhere.
    clear_broker_keys(client, QUEUE_KEY_PATTERNS)
    client.close()
    return int(cancelled or 0)


def start_celery_worker(stack: ExitStack, service: Service) -> Process:
    worker = start_worker(service.env, "bench-worker", service.home / "logs", timeout=120)
    stack.callback(worker.stop)
    return worker
