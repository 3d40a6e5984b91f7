"""Peak resident memory of an API process while it streams GET /v1/jobs/{id}/archive of a large artifact.

A real uvicorn (embedded SQLite, local store) and a succeeded job published the way the worker does
(store upload + crud.finish_job with metrics.archive). Prints one markdown table row: the artifact's
size, the API's VmHWM before and after the download, the time, and whether the streamed bytes hash
to the sha256 announced in X-Archive-SHA256. Usage: python bench/archive_memory.py [--mib 512]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from app import crud  # noqa: E402
from app.core.db import session_scope  # noqa: E402
from app.core.migrations import upgrade_head  # noqa: E402
from app.storage import job_prefix  # noqa: E402
from app.storage.archive import archive_root, local_archive_digest  # noqa: E402
from app.storage.local import LocalStore  # noqa: E402
from compression.specs import JobSpec  # noqa: E402
from tests.service.api_env import job_body, server_env  # noqa: E402
from tests.service.support.processes import free_port, start_api  # noqa: E402


def peak_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512, help="size of the artifact's weights file")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="spectra-archive-bench-"))
    url = f"sqlite:///{home / 'spectra.db'}"
    upgrade_head(url)
    api = start_api(server_env(home, url, "filesystem://"), (port := free_port()), home / "logs")
    try:
        folder = home / "out"
        folder.mkdir()
        block = os.urandom(1 << 20)
        with open(folder / "model.safetensors", "wb") as handle:
            for _ in range(args.mib):
                handle.write(block)
        (folder / "config.json").write_text("{}")
        with session_scope(url) as session:
            _, key = crud.create_api_key(session, tenant_name="bench")
            tenant_id = crud.get_or_create_tenant(session, name="bench").id
            spec = JobSpec.model_validate(job_body()).model_dump(mode="json")
            job_id = crud.create_job(session, tenant_id=tenant_id, spec=spec).id
            crud.claim_job(session, job_id=job_id, worker="bench", stale_after=60)
        stored = LocalStore(home / "artifacts", secret=b"test-signing-secret").upload_dir(
            folder, job_prefix(tenant_id, job_id))
        mtime = int(time.time())
        sha, size = local_archive_digest(archive_root(job_id), folder, [(f.name, f.size) for f in stored], mtime)
        with session_scope(url) as session:
            crud.finish_job(session, job_id=job_id, status="succeeded", worker="bench", artifacts=stored,
                            metrics={"archive": {"format": "tar", "sha256": sha, "bytes": size, "mtime": mtime}})
        before = peak_kib(api.pid)
        digest, received, started = hashlib.sha256(), 0, time.monotonic()
        with httpx.stream("GET", f"http://127.0.0.1:{port}/v1/jobs/{job_id}/archive", headers={"X-API-Key": key},
                          timeout=300) as response:
            response.raise_for_status()
            announced = response.headers["X-Archive-SHA256"]
            for chunk in response.iter_bytes():
                digest.update(chunk)
                received += len(chunk)
        seconds = time.monotonic() - started
        after = peak_kib(api.pid)
        print("| archive bytes | API VmHWM before (MiB) | after (MiB) | seconds | sha256 = header |")
        print("|---:|---:|---:|---:|---|")
        print(f"| {received} | {before / 1024:.1f} | {after / 1024:.1f} | {seconds:.1f} | "
              f"{digest.hexdigest() == announced == sha} |")
    finally:
        api.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
