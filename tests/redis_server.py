"""A real `redis-server` for the integration tests, on a free loopback port.

`RedisServer(dir)` starts it with no persistence (`--save "" --appendonly no`), bound to
127.0.0.1, and returns once it answers PING (polled, bounded: no fixed sleep). The handle can
stop it cleanly, kill it (SIGKILL: connections reset, state lost), pause and resume it
(SIGSTOP/SIGCONT: connections stay open, nothing answers), and restart it on the same port.
`redis-server` missing is an error, not a skip: CI installs it through scripts/test.sh.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Optional

from tests.support import free_port

MISSING = ("redis-server is not installed (or not on PATH): the Redis tests need a real server. "
           "Install it with scripts/setup.sh --system (apt-get install redis-server), "
           "or run scripts/test.sh, which does so.")


def _ping(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, workdir: str, port: Optional[int] = None, binary: Optional[str] = None,
                 extra_args: tuple = ()) -> None:
        self.extra_args = tuple(extra_args)
        self.binary = binary or shutil.which("redis-server") or ("/usr/bin/redis-server"
                                                                 if os.path.exists("/usr/bin/redis-server") else None)
        if self.binary is None:
            raise RuntimeError(MISSING)
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(workdir, "redis.log")
        self.starts = 0
        self.start()
        atexit.register(self.kill)  # never leave a server behind, even if the session dies early

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}:\n"
                                   f"{self.log()}")
            if _ping(self.port):
                return
            time.sleep(0.01)  # polling interval, not a readiness wait
        self.proc.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ping(self) -> bool:
        return _ping(self.port)

    def stop(self, timeout: float = 5.0) -> None:
        if not self.alive:
            return
        self.resume()  # a stopped process cannot handle SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: every connection is reset, every key lost."""
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        if self.alive:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """A fresh, empty server on the same port."""
        self.stop()
        self.start()

    # -- helpers for tests -------------------------------------------------------------------
    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def keys(self, pattern: str = "*") -> list:
        r = self.client()
        try:
            return sorted(k.decode() for k in r.keys(pattern))
        finally:
            r.close()

    def flushall(self) -> None:
        r = self.client()
        try:
            r.flushall()
        finally:
            r.close()
