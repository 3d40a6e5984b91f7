"""S3 store (AWS or MinIO) via boto3: multipart uploads, SigV4 presigned links for a public endpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.storage.base import CHUNK, ObjectNotFound, StorageError, StoredFile, clean_prefix, files_under

MULTIPART_THRESHOLD = 8 * 1024 * 1024


def _client(endpoint_url: str | None, region: str, access_key: str | None, secret_key: str | None) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=region,
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        # Force SigV4 (boto3 may otherwise presign SigV2-style for us-east-1) and path-style for MinIO.
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


class S3Store:
    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
        public_endpoint_url: str | None = None, region: str = "us-east-1",
        access_key: str | None = None, secret_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = clean_prefix(prefix) if prefix.strip("/") else ""
        self.client = _client(endpoint_url, region, access_key, secret_key)
        # SigV4 signs the Host header: links must be signed for the endpoint the user will reach.
        self.presign_client = (
            _client(public_endpoint_url, region, access_key, secret_key)
            if public_endpoint_url and public_endpoint_url != endpoint_url else self.client
        )
        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                       multipart_chunksize=MULTIPART_THRESHOLD, max_concurrency=4)

    def _full(self, key: str) -> str:
        key = clean_prefix(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def upload_dir(self, local_dir: Path, prefix: str) -> list[StoredFile]:
        prefix = clean_prefix(prefix)
        stored: list[StoredFile] = []
        for name, path in files_under(Path(local_dir)):
            key = f"{prefix}/{name}"
            digest, size = hashlib.sha256(), 0
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(CHUNK), b""):
                    digest.update(block)
                    size += len(block)
            sha = digest.hexdigest()
            try:
                self.client.upload_file(str(path), self.bucket, self._full(key), Config=self.transfer,
                                        ExtraArgs={"Metadata": {"sha256": sha}})
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(f"upload of {name} to s3://{self.bucket}/{self._full(key)} failed: {exc}") from exc
            stored.append(StoredFile(name=name, size=size, sha256=sha, key=key))
        return stored

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"no stored object {key!r}") from exc
            raise StorageError(f"reading {key!r} failed: {exc}") from exc

    def stream(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        body = self.open(key)
        return iter(lambda: body.read(chunk_size), b"")

    def url_for(self, key: str, filename: str, ttl: int, issuer: int | None = None) -> str:
        # A presigned link is S3's to check; it ends at its expiry (LINK_TTL_SECONDS), not at revocation.
        safe_name = filename.replace('"', "").split("/")[-1]
        return self.presign_client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._full(key),
                    "ResponseContentDisposition": f'attachment; filename="{safe_name}"'},
            ExpiresIn=int(ttl),
        )

    def delete_prefix(self, prefix: str) -> int:
        full = self._full(prefix) + "/"
        deleted = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (development and tests)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"S3 bucket {self.bucket!r} is not reachable: {exc}") from exc
