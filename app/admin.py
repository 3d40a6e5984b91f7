"""`spectra admin ...` other than create-key: tenant settings and listings. Output is plain text for
people and scripts (one line per item, tab-separated)."""

from __future__ import annotations

import argparse
import sys

from app import crud
from app.core.config import get_settings
from app.core.db import session_scope
from app.security import key_prefix


def _changes(args: argparse.Namespace) -> dict[str, object]:
    """Options not given are absent from args (argparse.SUPPRESS); None means 'default'."""
    return {key: getattr(args, key) for key in crud.TENANT_SETTINGS if hasattr(args, key)}


def _shown(value: object) -> str:
    if isinstance(value, list):
        return ",".join(value) or "(none)"
    return "default" if value is None else str(value)


def run_admin(args: argparse.Namespace) -> int:
    settings = get_settings()
    if (settings.database_url or "").startswith("sqlite"):
        from app.cli import migrate

        migrate()
    with session_scope(settings.database_url) as session:
        if args.admin_command == "set-tenant":
            changes = _changes(args)
            if not changes:
                print("nothing to change: give --priority or a limit (see --help)", file=sys.stderr)
                return 2
            try:
                crud.set_tenant(session, name=args.name, **changes)
            except crud.NoSuchTenant as exc:
                print(exc, file=sys.stderr)
                return 1
            print(f"tenant {args.name!r}: " + ", ".join(f"{k}={_shown(v)}" for k, v in changes.items()),  # type: ignore[arg-type]
                  file=sys.stderr)
            return 0
        if args.admin_command == "list-tenants":
            print("name\tpriority\tmax_active_jobs\tsubmissions_per_minute\tdaily_gpu_seconds\tallowed_models"
                  "\tactive_keys")
            for row in crud.list_tenants(session):
                print("\t".join([row.name, str(row.priority), _shown(row.max_active_jobs),
                                 _shown(row.submissions_per_minute), _shown(row.daily_gpu_seconds),
                                 _shown(row.allowed_models), str(row.active_keys)]))
            return 0
        if args.admin_command == "list-keys":
            print("tenant\tprefix\tcreated_at\trevoked_at")
            for tenant, key in crud.list_api_keys(session, tenant_name=args.tenant):
                revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
                print(f"{tenant}\t{key.prefix}\t{key.created_at.isoformat(timespec='seconds')}\t{revoked}")
            return 0
        if args.admin_command == "revoke-key":
            revoked = crud.revoke_api_key(session, prefix=key_prefix(args.prefix), tenant_name=args.tenant)
            if not revoked:
                print(f"no live key with prefix {key_prefix(args.prefix)!r} for tenant {args.tenant!r} "
                      "(see `spectra admin list-keys`)", file=sys.stderr)
                return 1
            print(f"revoked {revoked} key(s) of tenant {args.tenant!r}; API processes stop accepting it within "
                  "SPECTRA_AUTH_CACHE_SECONDS, its local download links at once", file=sys.stderr)
            return 0
    raise AssertionError(f"unhandled admin command {args.admin_command}")
