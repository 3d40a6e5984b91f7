"""API keys: 'sk_' + 43 url-safe chars (32 random bytes); only their sha256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk_"
SHOWN_PREFIX_LEN = 8


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # The key has 256 bits of entropy, so a plain (unsalted, fast) hash cannot be brute-forced.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_prefix(key: str) -> str:
    """The first characters of a key, shown in listings so a user can tell keys apart."""
    return key[:SHOWN_PREFIX_LEN]


def key_matches(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_api_key(key), stored_hash)


def looks_like_api_key(key: str) -> bool:
    """Cheap shape check before touching the database (bounded length, expected prefix)."""
    return key.startswith(KEY_PREFIX) and 20 <= len(key) <= 128
