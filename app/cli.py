"""The `spectra` command: serve, worker, migrate, admin create-key, and the library's compress/methods.

Nothing here imports torch at module level: `spectra compress` / `spectra methods` import the
library's CLI lazily inside their own branch, so `spectra serve` starts a torch-free API process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARY_COMMANDS = ("compress", "methods")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectra", description="Spectra: LLM compression as a service.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (and, embedded, one local worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true",
                       help="do not start the local worker even with the embedded filesystem broker")

    worker = sub.add_parser("worker", help="run a Celery worker on queue 'gpu'")
    worker.add_argument("--concurrency", type=int, default=1, help="processes (one per GPU)")
    worker.add_argument("--queues", default="gpu")
    worker.add_argument("--loglevel", default="INFO")

    sub.add_parser("migrate", help="alembic upgrade head on SPECTRA_DATABASE_URL")

    admin = sub.add_parser("admin", help="administration")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    key = admin_sub.add_parser("create-key", help="create an API key (and the tenant if needed); prints it once")
    key.add_argument("--tenant", required=True)
    tenant = admin_sub.add_parser("set-tenant", help="change a tenant's priority and limits")
    tenant.add_argument("name")
    tenant.add_argument("--priority", type=int, default=argparse.SUPPRESS,
                        help="queued jobs of higher-priority tenants are claimed first (default 0)")
    for option, what in (("--max-active-jobs", "queued + running jobs"),
                         ("--submissions-per-minute", "job submissions per minute"),
                         ("--daily-gpu-seconds", "worker seconds per 24 hours")):
        tenant.add_argument(option, type=_limit, metavar="N|default", default=argparse.SUPPRESS,
                            help=f"{what} (0 = unlimited; 'default' = the service-wide setting)")
    tenant.add_argument("--allowed-models", type=_patterns, metavar="PATTERN[,PATTERN...]|default",
                        default=argparse.SUPPRESS, help="model refs the tenant may compress, as shell patterns "
                        "('org/*', 'org/name', a local folder name); 'default' = SPECTRA_ALLOWED_MODELS")
    admin_sub.add_parser("list-tenants", help="tenants with their priority, limits and number of live keys")
    keys = admin_sub.add_parser("list-keys", help="API keys (prefix, tenant, created, revoked); never the keys")
    keys.add_argument("--tenant")
    revoke = admin_sub.add_parser("revoke-key", help="revoke an API key: its requests and the download links "
                                  "issued to it stop working")
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument("prefix", help="the key's prefix as list-keys shows it (or the whole key)")

    for name in LIBRARY_COMMANDS:
        sub.add_parser(name, help=f"the library's `{name}` (see `spectra {name} --help`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIBRARY_COMMANDS:
        from compression.cli import main as library_main  # torch is imported only on this branch

        return int(library_main(argv) or 0)
    args = _parser().parse_args(argv)
    quiet = args.command == "admin"  # its stdout is the key alone, for scripts
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if args.command == "serve":
        return serve(args.host, args.port, start_worker=not args.no_worker)
    if args.command == "worker":
        return run_worker(args.concurrency, args.queues, args.loglevel)
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "admin" and args.admin_command == "create-key":
        print(create_key(args.tenant))
        return 0
    if args.command == "admin":
        from app.admin import run_admin

        return run_admin(args)
    raise AssertionError(f"unhandled command {args.command}")


def _limit(text: str) -> int | None:
    """A limit on the command line: a number >= 0, or 'default' (None: the service-wide setting)."""
    if text == "default":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a limit is a number >= 0 (0 = unlimited) or 'default'")
    return value


def _patterns(text: str) -> list[str] | None:
    return None if text == "default" else [p.strip() for p in text.split(",") if p.strip()]


def migrate() -> None:
    """alembic upgrade head on SPECTRA_DATABASE_URL."""
    from app.core.config import get_settings
    from app.core.migrations import upgrade_head

    upgrade_head(get_settings().database_url or "")


def create_key(tenant: str) -> str:
    from app import crud
    from app.core.config import get_settings
    from app.core.db import session_scope

    settings = get_settings()
    if _is_sqlite(settings.database_url):
        migrate()
    with session_scope(settings.database_url) as session:
        _, plaintext = crud.create_api_key(session, tenant_name=tenant)
    print(f"created a key for tenant {tenant!r}; it is shown only this once", file=sys.stderr)
    return plaintext


def _is_sqlite(url: str | None) -> bool:
    return (url or "").startswith("sqlite")


def run_worker(concurrency: int, queues: str, loglevel: str) -> int:
    """Replace this process with a Celery worker (worker.celery_app, named, never imported by app/)."""
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues,
                              "-c", str(concurrency), "--pool", "prefork", "--loglevel", loglevel, "-O", "fair"])


def _start_local_worker() -> subprocess.Popen[bytes]:
    """One worker process beside the API, in its own process group so shutdown reaches its children."""
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", "gpu", "-c", "1",
               "--pool", "prefork", "--loglevel", "INFO", "-O", "fair"]
    return subprocess.Popen(command, cwd=str(REPO_ROOT), start_new_session=True)


def _stop_process_group(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM (warm shutdown), then SIGKILL. A job cut off here is re-queued later by the sweeper."""
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)  # the main process stops its pool children itself
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def _exit_quietly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(host: str, port: int, *, start_worker: bool = True) -> int:
    import uvicorn

    from app.core.config import get_settings
    from app.queue import enqueue_compress
    from app.supervisor import WorkerSupervisor, set_current
    from app.sweeper import Sweeper

    # uvicorn re-raises the SIGTERM/SIGINT it handled once it has shut down; turn that into SystemExit so
    # the `finally` below still stops the sweeper and the local worker instead of dying on the spot.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_quietly)
    settings = get_settings()
    if _is_sqlite(settings.database_url):
        migrate()
    supervisor = None
    if start_worker and settings.is_embedded_broker:
        # Restarted with backoff when it dies; /readyz (same process) reports its state.
        supervisor = WorkerSupervisor(_start_local_worker, _stop_process_group)
        supervisor.start()
        set_current(supervisor)
    sweeper = Sweeper.from_settings(settings, send=lambda job_id: enqueue_compress(settings, job_id))
    sweeper.start()
    try:
        # uvicorn handles SIGINT/SIGTERM itself and returns here after a graceful shutdown.
        uvicorn.run("app.main:create_app", factory=True, host=host, port=port, log_level="info")
    finally:
        sweeper.stop()
        if supervisor is not None:
            set_current(None)
            supervisor.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
