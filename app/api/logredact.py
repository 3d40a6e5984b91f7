"""Keep credentials out of uvicorn's access log.

A local download link carries its credential in the query string (`?token=...`), and uvicorn's
access log writes the full path with its query, so anyone reading the logs could download the
artifact until the link expires. This filter rewrites each access record's path, replacing the
values of credential-like query parameters; everything else in the line stays as it was.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[redacted]"
SENSITIVE_PARAMS = frozenset({
    "token", "key", "api_key", "apikey", "x-api-key", "secret", "password", "signature",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
})


def redact_path(path: str) -> str:
    """'/v1/artifacts/download?token=abc' -> '/v1/artifacts/download?token=[redacted]'."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SENSITIVE_PARAMS for name, _ in pairs):
        return path
    cleaned = [(name, REDACTED if name.lower() in SENSITIVE_PARAMS else value) for name, value in pairs]
    return f"{base}?{urlencode(cleaned, safe='[]/')}"


class RedactQueryCredentials(logging.Filter):
    """For uvicorn.access records: args are (client, method, path_with_query, http_version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            try:
                path = redact_path(args[2])
            except Exception:  # never let a log line through unredacted, nor break logging
                path = args[2].partition("?")[0] + "?" + REDACTED
            record.args = (args[0], args[1], path, args[3], args[4])
        return True


def install_access_log_redaction() -> None:
    """Idempotent: attach the filter to uvicorn's access logger once per process."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryCredentials) for f in logger.filters):
        logger.addFilter(RedactQueryCredentials())
