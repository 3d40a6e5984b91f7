"""N independent uvicorn processes on one port, each with a listening socket of its own (SO_REUSEPORT).

    python bench/reuseport_api.py app.main:create_app --port 8000 --processes 2

`uvicorn --workers N` shares one listening socket among its workers, and whichever process polls it
first accepts everything that is waiting: a burst of 64 connections was split 42/22 or 44/20 between
two workers, and the clients on the busier one waited twice as long for as long as their connection
lived (bench/README.md). With SO_REUSEPORT the kernel hands each new connection to one of the
sockets by a hash of its addresses, independently of which process is busy. nginx's `reuseport`
does the same. This launcher starts the processes (uvloop, httptools, no access log, as api_load.py
measures); each binds its own socket. It stops them all when told to stop or when one of them exits.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def bound_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def serve_one(app: str, host: str, port: int, backlog: int) -> None:
    """One API process on a socket of its own. Not `uvicorn --fd`: uvicorn takes such a socket for a
    Unix socket, and its TCP connections then go without TCP_NODELAY (40 ms Nagle stalls)."""
    import uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app's package, run as a script
    config = uvicorn.Config(app, factory=True, loop="uvloop", http="httptools", log_level="warning",
                            access_log=False, backlog=backlog)
    uvicorn.Server(config).run(sockets=[bound_socket(host, port, backlog)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", help="the ASGI app factory, e.g. app.main:create_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: serve, do not spawn
    args = parser.parse_args()
    if args.one:
        serve_one(args.app, args.host, args.port, args.backlog)
        return 0
    # Each child binds its own socket; the kernel refuses a second bind only if SO_REUSEPORT is off.
    command = [sys.executable, __file__, args.app, "--host", args.host, "--port", str(args.port),
               "--backlog", str(args.backlog), "--one"]
    children = [subprocess.Popen(command) for _ in range(args.processes)]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return max((child.returncode or 0 for child in children), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
