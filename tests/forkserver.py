"""Run a stand-in CLI without paying its imports on every call: a fork server.

tests/fake_aws.py checks each call against botocore's service models; importing botocore costs
about 0.35 s of CPU, and a deploy script calls `aws` dozens of times. The stand-in's shim runs
this file instead: it connects to a server that has imported the stand-in once, hands over its
argv, environment, working directory and its own stdin, stdout and stderr (SCM_RIGHTS), and the
server forks a child that runs the stand-in's `main(argv)` on those very descriptors and sends
back the exit status. So a call behaves as if the stand-in ran in the shim's process: same
output, same pipes, same status. The child, not the server, waits for the work, so calls run
concurrently (`aws ecr get-login-password | docker login` needs both ends at once).

The first shim starts the server (under a lock, so parallel callers start one); it exits after
IDLE_SECONDS without a call. The socket's name covers the interpreter and the stand-in's path and
modification time, so an edited stand-in gets a new server. Where no server can be reached the
shim imports the stand-in and runs it in its own process, as before.

Usage (the shim): python forkserver.py <stand-in.py> <argv...>
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

IDLE_SECONDS = 120
HEADER = struct.Struct("!Q")
STATUS = struct.Struct("!i")


def _socket_path(target: Path) -> Path:
    key = f"{sys.executable}\0{target}\0{target.stat().st_mtime_ns}"
    return Path(tempfile.gettempdir()) / f"fd-forkserver-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"


def _load(target: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(target.stem, target)
    assert spec and spec.loader, target
    module = importlib.util.module_from_spec(spec)
    sys.modules[target.stem] = module
    spec.loader.exec_module(module)
    return module


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the caller went away")
        data += chunk
    return data


def _child(module: ModuleType, conn: socket.socket) -> None:
    """In the forked child: become the caller's process, run the stand-in, report its status."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the stand-in may wait for its own children
        header, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, 3)
        if len(header) < HEADER.size:
            header += _recv_exactly(conn, HEADER.size - len(header))
        (size,) = HEADER.unpack(header)
        request = json.loads(_recv_exactly(conn, size))
        for fd, target in zip(fds, (0, 1, 2), strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [str(module.__file__), *request["argv"]]
        try:
            status = int(module.main(request["argv"]) or 0)
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except BaseException:
            traceback.print_exc()
            status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: the status still goes back
                stream.flush()
        try:
            conn.sendall(STATUS.pack(status))
        finally:
            os._exit(0)


def serve(target: Path, path: Path) -> None:
    module = _load(target)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(64)
    server.settimeout(IDLE_SECONDS)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return
            if os.fork() == 0:
                server.close()
                _child(module, conn)
            conn.close()
    finally:
        path.unlink(missing_ok=True)


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def _server(target: Path) -> socket.socket | None:
    path = _socket_path(target)
    sock = _connect(path)
    if sock:
        return sock
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)
        if sock:
            return sock
        path.unlink(missing_ok=True)  # a server that died left its socket behind
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(target), str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sock = _connect(path)
            if sock:
                return sock
            time.sleep(0.02)
    return None


def call(target: Path, argv: list[str]) -> int:
    sock = _server(target)
    if sock is None:  # no server: run the stand-in here, as it always could
        return int(_load(target).main(argv) or 0)
    payload = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    socket.send_fds(sock, [HEADER.pack(len(payload))], [0, 1, 2])
    sock.sendall(payload)
    return STATUS.unpack(_recv_exactly(sock, STATUS.size))[0]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(call(Path(sys.argv[1]).resolve(), sys.argv[2:]))
