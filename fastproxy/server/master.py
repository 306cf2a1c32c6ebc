"""Process model: one worker in-process, or a master that forks N workers sharing the port.

With `workers > 1` the master first checks that nothing else holds the port (see
`server.listen`), then forks; each child binds its own SO_REUSEPORT socket and runs its
own uvloop; the kernel spreads connections over them. The master prints the ready line once
every worker listens, replaces a worker that dies, forwards SIGHUP after validating the file
itself (a bad file never reaches the workers), and on SIGTERM/SIGINT drains the workers and exits
0 when they are done.
"""

import logging
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Optional

from fastproxy.admin import METRICS_DIR_ENV
from fastproxy.config.compile import Snapshot, load
from fastproxy.config.load import ConfigError
from fastproxy.server.listen import ListenError, make_listener, port_taken
from fastproxy.server.worker import run_worker

log = logging.getLogger("fastproxy")
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def ready_line(ip: str, port: int, workers: int) -> str:
    shown = f"[{ip}]" if ":" in ip else ip
    plural = "s" if workers != 1 else ""
    return f"fastproxy ready: listening on http://{shown}:{port} with {workers} worker{plural} (pid {os.getpid()})"


def run(snap: Snapshot, config_path: Optional[str]) -> int:
    """Serve until drained. `ListenError` when the port (or the admin port) cannot be had."""
    if snap.workers == 1:
        # no SO_REUSEPORT: the bind fails if anything holds the port, and nothing can join later
        sock = make_listener(snap.listen_ip, snap.port, reuse_port=False)
        port = sock.getsockname()[1]

        def ready(_w: object) -> None:
            print(ready_line(snap.listen_ip, port, 1), flush=True)

        return run_worker(snap, config_path, sock=sock, ready=ready)
    return Master(snap, config_path).run()


class Master:
    def __init__(self, snap: Snapshot, config_path: Optional[str]) -> None:
        self.snap = snap
        self.config_path = config_path
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False
        self._respawn: list = []  # indexes of workers to replace
        self.metrics_dir = tempfile.mkdtemp(prefix="fastproxy-")

    def run(self) -> int:
        snap = self.snap
        if snap.port == 0:
            print("fastproxy: several workers need a fixed port (port 0 would give each its own)", file=sys.stderr)
            return 1
        taken = port_taken(snap.listen_ip, snap.port)
        if taken is None and snap.admin_port:  # worker 0 opens it: say so before forking
            taken = port_taken(snap.admin_ip, snap.admin_port, "the admin address ")
        if taken is not None:
            raise ListenError(taken)
        os.environ[METRICS_DIR_ENV] = self.metrics_dir
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        rfd, wfd = os.pipe()
        for i in range(snap.workers):
            self.spawn(i, wfd)
        got = 0
        deadline = time.monotonic() + 30
        while got < snap.workers and time.monotonic() < deadline:
            r, _, _ = select.select([rfd], [], [], 0.2)
            if r:
                got += len(os.read(rfd, 64))
            if self.reap() and not got:
                break
        if got < snap.workers:
            log.error("workers failed to start")
            self.stop_all()
            return 1
        print(ready_line(snap.listen_ip, snap.port, snap.workers), flush=True)
        try:
            return self.loop(wfd)
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def spawn(self, index: int, wfd: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                code = run_worker(self.snap, self.config_path, ready=lambda _w: os.write(wfd, b"r"), index=index)
            except BaseException:
                log.exception("worker crashed")
            finally:
                os._exit(code)
        self.children[pid] = index

    def reap(self) -> int:
        died = 0
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return died
            if pid == 0:
                return died
            index = self.children.pop(pid, None)
            if index is None:
                continue
            died += 1
            try:
                os.unlink(os.path.join(self.metrics_dir, f"worker-{pid}.json"))
            except OSError:
                pass
            if not self.stopping:
                log.warning("worker %d (pid %d) exited with status %d: replacing it", index, pid, status)
                self._respawn.append(index)

    def loop(self, wfd: int) -> int:
        while True:
            info = signal.sigtimedwait(list(SIGNALS), 1.0)
            self.reap()
            while self._respawn and not self.stopping:
                self.spawn(self._respawn.pop(), wfd)
            if info is not None:
                sig = info.si_signo
                if sig in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self.stopping = True
                    log.info("master: draining %d workers", len(self.children))
                    for pid in self.children:
                        os.kill(pid, signal.SIGTERM)
                elif sig == signal.SIGHUP and not self.stopping:
                    self.reload()
            if self.stopping and not self.children:
                return 0

    def reload(self) -> None:
        try:
            snap = load(self.config_path)
        except ConfigError as exc:
            log.error("reload of %s refused, keeping the running configuration:\n  %s", self.config_path,
                      "\n  ".join(exc.problems))
            return
        # a worker forked from now on (a replacement) starts with this configuration; the
        # listener and the worker count stay those of the running process
        snap.port, snap.listen_ip, snap.workers = self.snap.port, self.snap.listen_ip, self.snap.workers
        self.snap = snap
        for pid in self.children:
            os.kill(pid, signal.SIGHUP)

    def stop_all(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.stopping = True
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
