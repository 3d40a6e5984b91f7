"""Local-filesystem store: files under a root folder, downloads through HMAC-signed expiring API links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from app.storage.base import CHUNK, ObjectNotFound, StorageError, StoredFile, clean_prefix, files_under


class TokenError(Exception):
    """A download token is malformed, tampered with or expired (the message says which)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(secret: bytes, key: str, filename: str, ttl: int, now: float | None = None,
               issuer: int | None = None) -> str:
    """payload.signature; the payload names exactly one object, an expiry time and (when given) the id
    of the API key the link was issued to, so that revoking the key revokes the link."""
    fields: dict[str, object] = {"k": key, "f": filename, "e": int((now or time.time()) + ttl)}
    if issuer is not None:
        fields["a"] = issuer
    payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{signature}"


def verify_token(secret: bytes, token: str, now: float | None = None) -> tuple[str, str]:
    """(key, filename) of a valid token; TokenError otherwise. Signature checked in constant time."""
    try:
        payload, signature = token.split(".")
        expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    except (ValueError, UnicodeError):
        raise TokenError("malformed download token; request a new link from /v1/jobs/{id}/artifacts") from None
    # Bytes, not str: compare_digest refuses non-ASCII str, and a URL can carry any character.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
        raise TokenError("invalid download token signature; request a new link from /v1/jobs/{id}/artifacts")
    try:
        data = json.loads(_unb64(payload))
        key, filename, expires = str(data["k"]), str(data["f"]), int(data["e"])
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed download token; request a new link from /v1/jobs/{id}/artifacts") from None
    if (now or time.time()) > expires:
        raise TokenError("download link expired; request a new one from /v1/jobs/{id}/artifacts")
    return key, filename


def token_issuer(token: str) -> int | None:
    """The API key id a token was issued to (call after verify_token), or None for an older token."""
    data = json.loads(_unb64(token.split(".")[0]))
    issuer = data.get("a")
    return int(issuer) if isinstance(issuer, int) else None


class LocalStore:
    def __init__(self, root: Path, *, secret: bytes, public_url: str = "") -> None:
        """public_url '' makes url_for return a path ('/v1/...') that the API completes per request."""
        self.root = Path(root).expanduser().resolve()
        self.secret = secret
        self.public_url = public_url.rstrip("/")

    def _path(self, key: str) -> Path:
        path = (self.root / clean_prefix(key)).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"storage key {key!r} escapes the store root")
        return path

    def upload_dir(self, local_dir: Path, prefix: str) -> list[StoredFile]:
        """Copy every file, hashing as it goes; each file appears under its name only when complete."""
        prefix = clean_prefix(prefix)
        stored: list[StoredFile] = []
        for name, source in files_under(Path(local_dir)):
            key = f"{prefix}/{name}"
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
            digest, size = hashlib.sha256(), 0
            with open(source, "rb") as src, open(partial, "wb") as dst:
                for block in iter(lambda: src.read(CHUNK), b""):
                    digest.update(block)
                    size += len(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(partial, target)
            stored.append(StoredFile(name=name, size=size, sha256=digest.hexdigest(), key=key))
        return stored

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no stored object {key!r}")
        return open(path, "rb")

    def stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        handle = self.open(key)

        def chunks() -> Iterator[bytes]:
            with handle:
                yield from iter(lambda: handle.read(chunk_size), b"")

        return chunks()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def url_for(self, key: str, filename: str, ttl: int, issuer: int | None = None) -> str:
        token = sign_token(self.secret, clean_prefix(key), filename, ttl, issuer=issuer)
        return f"{self.public_url}/v1/artifacts/download?token={quote(token)}"

    def resolve_token(self, token: str) -> tuple[str, str]:
        return verify_token(self.secret, token)

    def delete_prefix(self, prefix: str) -> int:
        path = self._path(prefix)
        if not path.exists():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 1
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return count

    def ping(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".ping-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"artifact folder {self.root} is not writable: {exc}") from exc
