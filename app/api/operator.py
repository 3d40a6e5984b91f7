"""Who may see the service's internals: the operator, by SPECTRA_ADMIN_KEY in the X-Admin-Key header.

/readyz tells anyone whether the service is ready, and only the operator which check failed and why
(the reasons name database and broker hosts, ports and folders). /metrics (job counts across all
tenants, request rates) is the operator's unless SPECTRA_METRICS_PUBLIC opens it, e.g. for a
Prometheus that scrapes a private address.
"""

from __future__ import annotations

import hmac

from fastapi import Request

ADMIN_HEADER = "X-Admin-Key"


def is_operator(request: Request) -> bool:
    secret = request.app.state.settings.admin_key
    given = request.headers.get(ADMIN_HEADER)
    if secret is None or not given:
        return False
    return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
