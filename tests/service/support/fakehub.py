"""A small local stand-in for the Hugging Face Hub's upload endpoints (the hub is unreachable here).

Only what huggingface_hub's create_repo + create_commit call: POST /api/repos/create, POST
/api/validate-yaml (a README.md in the commit), POST /api/{type}s/{repo}/preupload/{rev} (we answer
"regular" for every file, so contents travel base64 inside the commit instead of through LFS/Xet) and
POST /api/{type}s/{repo}/commit/{rev} (NDJSON). Every request must carry the expected Bearer token.
Repositories whose name starts with "forbidden" answer 403, as the hub does for a namespace the token
cannot write to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeHub:
    url: str
    token: str
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> {path: content}
    commits: list[dict[str, Any]] = field(default_factory=list)


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._reply(401, {"error": "Invalid credentials in Authorization header"})
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts == ["api", "repos", "create"]:
                payload = json.loads(raw)
                repo = f"{payload['organization']}/{payload['name']}"
                if payload["name"].startswith("forbidden"):
                    self._reply(403, {"error": f"You don't have the rights to create a model under {repo}"})
                    return
                existed = repo in hub.repos
                hub.repos.setdefault(repo, {})
                self._reply(409 if existed else 200, {"url": f"{hub.url}/{repo}", "error": "exists"} if existed
                            else {"url": f"{hub.url}/{repo}"})
            elif parts == ["api", "validate-yaml"]:
                self._reply(200, {"errors": [], "warnings": []})
            elif len(parts) == 6 and parts[0] == "api" and parts[4] == "preupload":
                files = json.loads(raw)["files"]
                self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                            for f in files]})
            elif len(parts) == 6 and parts[0] == "api" and parts[4] == "commit":
                repo = f"{parts[2]}/{parts[3]}"
                if repo not in hub.repos:
                    self._reply(404, {"error": f"Repository {repo} not found"})
                    return
                lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
                files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                         for item in lines if item["key"] == "file"}
                hub.repos[repo].update(files)
                oid = hashlib.sha1(raw).hexdigest()
                hub.commits.append({"repo": repo, "header": lines[0]["value"], "files": sorted(files)})
                self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{oid}", "commitOid": oid})
            else:
                self._reply(404, {"error": f"the fake hub has no {self.path}"})

    return Handler


@contextmanager
def fake_hub(token: str) -> Iterator[FakeHub]:
    hub = FakeHub("", token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
