"""Artifact stores against real backends: the local folder and moto's S3 server over HTTP."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from app.core.config import Settings
from app.storage import StorageError, store_from_settings
from app.storage.local import LocalStore, TokenError, sign_token, verify_token
from app.storage.s3 import MULTIPART_THRESHOLD, S3Store
from tests.service.support.infra import S3Server, moto_s3

BIG = MULTIPART_THRESHOLD + 1024 * 1024 + 7  # forces a multipart upload on S3


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("artifact")
    (folder / "tokenizer").mkdir()
    (folder / "config.json").write_text('{"num_hidden_layers": 2}')
    (folder / "tokenizer" / "tokenizer.json").write_text('{"vocab": {}}')
    (folder / "model.safetensors").write_bytes(os.urandom(BIG))
    return folder


def _expected(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3() as server:
        yield server


def _s3_store(s3: S3Server, prefix: str = "") -> S3Store:
    return S3Store(s3.bucket, prefix, endpoint_url=s3.endpoint, region=s3.region,
                   access_key=s3.access_key, secret_key=s3.secret_key)


def test_local_upload_download_and_token_scope(tmp_path: Path, artifact_dir: Path) -> None:
    store = LocalStore(tmp_path / "root", secret=b"k1", public_url="http://api.example")
    stored = store.upload_dir(artifact_dir, "tenants/1/jobs/j1")
    assert {f.name: (f.size, f.sha256) for f in stored} == _expected(artifact_dir)
    assert all(f.key == f"tenants/1/jobs/j1/{f.name}" for f in stored)
    assert not list((tmp_path / "root").rglob("*.partial-*"))
    big = next(f for f in stored if f.name == "model.safetensors")
    assert hashlib.sha256(b"".join(store.stream(big.key))).hexdigest() == big.sha256
    url = store.url_for(big.key, "model.safetensors", ttl=60)
    assert url.startswith("http://api.example/v1/artifacts/download?token=")
    token = parse_qs(urlparse(url).query)["token"][0]
    assert store.resolve_token(token) == (big.key, "model.safetensors")
    # A token names one object: rewriting its payload to another key breaks the signature.
    other = sign_token(b"k1", "tenants/1/jobs/j1/config.json", "config.json", 60)
    forged = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(TokenError, match="signature"):
        store.resolve_token(forged)
    with pytest.raises(TokenError, match="signature"):
        verify_token(b"another-secret", token)
    with pytest.raises(TokenError, match="expired"):
        verify_token(b"k1", sign_token(b"k1", big.key, "m", ttl=10, now=time.time() - 60))
    with pytest.raises(TokenError, match="malformed"):
        store.resolve_token("no-dot-here")
    with pytest.raises(StorageError):
        store.upload_dir(artifact_dir, "../escape")
    assert store.delete_prefix("tenants/1/jobs/j1") == 3 and not (tmp_path / "root/tenants/1/jobs/j1").exists()
    store.ping()


def test_s3_upload_dir_multipart_sha256_and_presigned_get(s3: S3Server, artifact_dir: Path) -> None:
    store = _s3_store(s3, "spectra")
    store.ping()
    stored = store.upload_dir(artifact_dir, "tenants/7/jobs/abc")
    assert {f.name: (f.size, f.sha256) for f in stored} == _expected(artifact_dir)
    head = s3.client().head_object(Bucket=s3.bucket, Key="spectra/tenants/7/jobs/abc/model.safetensors")
    assert head["ETag"].strip('"').endswith("-2"), "a 9+ MiB file must go up in multipart parts"
    assert head["Metadata"]["sha256"] == next(f.sha256 for f in stored if f.name == "model.safetensors")
    for item in stored:
        url = store.url_for(item.key, item.name.split("/")[-1], ttl=120)
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url  # SigV4, not SigV2
        response = httpx.get(url, timeout=30)  # plain HTTP, no credentials
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == item.sha256
        assert item.name.split("/")[-1] in response.headers["content-disposition"]
    assert store.delete_prefix("tenants/7/jobs/abc") == 3
    assert "Contents" not in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="spectra/tenants/7/")


def test_s3_presigns_for_the_public_endpoint(s3: S3Server) -> None:
    store = S3Store(s3.bucket, endpoint_url=s3.endpoint, public_endpoint_url="https://files.example.com",
                    access_key=s3.access_key, secret_key=s3.secret_key)
    url = urlparse(store.url_for("tenants/1/jobs/x/config.json", "config.json", ttl=60))
    assert (url.scheme, url.netloc) == ("https", "files.example.com")


def test_s3_missing_bucket_fails_ping_with_its_name(s3: S3Server) -> None:
    store = S3Store("no-such-bucket", endpoint_url=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key)
    with pytest.raises(StorageError, match="no-such-bucket"):
        store.ping()


def test_store_from_settings_picks_the_backend(tmp_path: Path, s3: S3Server) -> None:
    local = store_from_settings(Settings(home=tmp_path, signing_secret="x"))  # type: ignore[arg-type]
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "artifacts").resolve()
    remote = store_from_settings(Settings(  # type: ignore[arg-type]
        home=tmp_path, artifact_store=f"s3://{s3.bucket}/pre", s3_endpoint_url=s3.endpoint,
        s3_access_key_id=s3.access_key, s3_secret_access_key=s3.secret_key))
    assert isinstance(remote, S3Store) and remote.prefix == "pre"
    remote.ping()
    with pytest.raises(ValueError, match="SPECTRA_ARTIFACT_STORE"):
        store_from_settings(Settings(home=tmp_path, artifact_store="ftp://x"))  # type: ignore[arg-type]
