"""Process model: one worker in-process, or a master that forks N workers sharing the port.

With `workers > 1` the master first checks that nothing else holds the port (see
`server.listen`), then forks; each child binds its own SO_REUSEPORT socket and runs its own
uvloop; the kernel spreads connections over them. The master prints the ready line once every
worker listens, forwards SIGHUP after validating the file itself (a bad file, or one that would
turn TLS on or off on the port, never reaches the workers), and on SIGTERM/SIGINT drains the
workers and exits 0 when they are done.

Replacing workers. A worker that dies is forked again. A worker that dies within
`STABLE_AFTER` seconds of its start (before it was ready, or soon after) counts as a failed
start, and its replacement waits: 0.1 s after the first, doubling up to `BACKOFF_CAP`; a worker
that ran longer is replaced at once and its count starts over. A worker that cannot open a
listener logs why and exits with `EXIT_START_FAILED`; the master logs every exit status and
the wait. When no worker is running and every worker has failed `GIVE_UP_AFTER` starts in a
row, nothing can serve: the master gives up and exits 1, so that a supervisor sees the proxy
down instead of a master that listens on nothing. At start-up (before the ready line) any
worker that dies makes `run` exit 1 at once: nothing half-started is left serving.
"""

import logging
import os
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from typing import Optional

from fastproxy import build_mode
from fastproxy.admin import METRICS_DIR_ENV
from fastproxy.config.compile import Snapshot, load
from fastproxy.config.load import ConfigError
from fastproxy.config.tls import listener_change
from fastproxy.server.listen import ListenError, make_listener, port_taken
from fastproxy.server.worker import Worker, run_worker

log = logging.getLogger("fastproxy")
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}

BACKOFF_FIRST = 0.1  # s, wait before the replacement of a worker that failed once
BACKOFF_CAP = 5.0  # s, the longest wait between two starts of one worker
STABLE_AFTER = 5.0  # s, a worker up this long did start: its death is not a failed start
GIVE_UP_AFTER = 5  # failed starts in a row of every worker, none running: exit 1
START_TIMEOUT = 30.0  # s, for all workers to be ready at start-up
EXIT_START_FAILED = 3  # a worker's exit code when it could not start (it logs why)
_READY = struct.Struct("=i")  # a worker's pid, written to the ready pipe once it listens


def ready_line(ip: str, port: int, workers: int, scheme: str = "http") -> str:
    shown = f"[{ip}]" if ":" in ip else ip
    plural = "s" if workers != 1 else ""
    return (f"fastproxy ready: listening on {scheme}://{shown}:{port} with {workers} worker{plural} "
            f"({build_mode()}, pid {os.getpid()})")


def backoff(failures: int) -> float:
    """Seconds to wait before starting a worker that has failed `failures` starts in a row."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2.0 ** (failures - 1))


def describe_exit(status: int) -> str:
    """A waitpid status in words."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by signal {sig} ({name})"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def run(snap: Snapshot, config_path: Optional[str]) -> int:
    """Serve until drained. `ListenError` when the port (or the admin port) cannot be had."""
    if snap.workers == 1:
        # no SO_REUSEPORT: the bind fails if anything holds the port, and nothing can join later
        sock = make_listener(snap.listen_ip, snap.port, reuse_port=False)
        port = sock.getsockname()[1]

        def ready(_w: object) -> None:
            print(ready_line(snap.listen_ip, port, 1, snap.scheme), flush=True)

        return run_worker(snap, config_path, sock=sock, ready=ready)
    return Master(snap, config_path).run()


class Child:
    __slots__ = ("index", "started", "ready")

    def __init__(self, index: int, started: float) -> None:
        self.index = index
        self.started = started
        self.ready = False


class Master:
    def __init__(self, snap: Snapshot, config_path: Optional[str]) -> None:
        self.snap = snap
        self.config_path = config_path
        self.children: dict[int, Child] = {}  # pid -> its worker
        self.stopping = False
        self.failures = [0] * snap.workers  # failed starts in a row, per worker index
        self.due: dict[int, float] = {}  # worker index -> when to fork it again (monotonic)
        self._ready_buf = b""
        self.metrics_dir = tempfile.mkdtemp(prefix="fastproxy-")

    def run(self) -> int:
        try:
            return self._run()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _run(self) -> int:
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
        os.set_blocking(rfd, False)
        for i in range(snap.workers):
            self.spawn(i, wfd)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(c.ready for c in self.children.values()) or len(self.children) < snap.workers:
            if time.monotonic() > deadline:
                log.error("workers not ready within %.0f s: stopping", START_TIMEOUT)
                self.stop_all()
                return 1
            select.select([rfd], [], [], 0.05)
            self.read_ready(rfd)
            for pid, child, status in self.reap():
                log.error("worker %d (pid %d) %s before it was ready: not starting", child.index, pid,
                          describe_exit(status))
                self.stop_all()
                return 1
        print(ready_line(snap.listen_ip, snap.port, snap.workers, snap.scheme), flush=True)
        return self.loop(rfd, wfd)

    def spawn(self, index: int, wfd: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1

            def ready(_w: Worker) -> None:
                os.write(wfd, _READY.pack(os.getpid()))

            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
                code = run_worker(self.snap, self.config_path, index=index, ready=ready)
            except ListenError as exc:
                log.error("worker %d could not start: %s", index, exc)
                code = EXIT_START_FAILED
            except BaseException:
                log.exception("worker %d crashed", index)
            finally:
                os._exit(code)
        self.children[pid] = Child(index, time.monotonic())

    def read_ready(self, rfd: int) -> None:
        """Mark the workers whose ready records are in the pipe."""
        while True:
            try:
                data = os.read(rfd, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            buf = self._ready_buf + data
            whole = len(buf) - len(buf) % _READY.size
            for (pid,) in _READY.iter_unpack(buf[:whole]):
                child = self.children.get(pid)
                if child is not None:
                    child.ready = True
            self._ready_buf = buf[whole:]

    def reap(self) -> list[tuple[int, Child, int]]:
        """Collect every child that exited: [(pid, Child, status)]."""
        out: list[tuple[int, Child, int]] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return out
            if pid == 0:
                return out
            child = self.children.pop(pid, None)
            if child is None:
                continue
            try:
                os.unlink(os.path.join(self.metrics_dir, f"worker-{pid}.json"))
            except OSError:
                pass
            out.append((pid, child, status))

    def schedule(self, pid: int, child: Child, status: int, now: float) -> None:
        """Decide when the worker of `child` (which just exited) starts again, and say why."""
        i = child.index
        uptime = now - child.started
        how = describe_exit(status)
        if child.ready and uptime >= STABLE_AFTER:
            self.failures[i] = 0
            self.due[i] = now
            log.warning("worker %d (pid %d) %s after %.0f s: replacing it", i, pid, how, uptime)
            return
        self.failures[i] += 1
        wait = backoff(self.failures[i])
        self.due[i] = now + wait
        when = f"{uptime:.1f} s after its start" if child.ready else "before it was ready"
        log.warning("worker %d (pid %d) %s %s: replacing it in %.1f s (failed starts in a row: %d)", i, pid,
                    how, when, wait, self.failures[i])

    def loop(self, rfd: int, wfd: int) -> int:
        while True:
            now = time.monotonic()
            timeout = 1.0
            if self.due:
                timeout = max(0.0, min(timeout, min(self.due.values()) - now))
            info = signal.sigtimedwait(list(SIGNALS), timeout)
            self.read_ready(rfd)
            now = time.monotonic()
            for pid, child, status in self.reap():
                if not self.stopping:
                    self.schedule(pid, child, status, now)
            if not self.stopping and not self.children and min(self.failures) >= GIVE_UP_AFTER:
                log.error("no worker could start (%d failed starts in a row each, reasons above): giving up",
                          GIVE_UP_AFTER)
                return 1
            for i, at in list(self.due.items()):
                if self.stopping:
                    self.due.clear()
                elif at <= now:
                    del self.due[i]
                    self.spawn(i, wfd)
            if info is not None:
                sig = info.si_signo
                if sig in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self.stopping = True
                    self.due.clear()
                    log.info("master: draining %d workers", len(self.children))
                    for pid in self.children:
                        os.kill(pid, signal.SIGTERM)
                elif sig == signal.SIGHUP and not self.stopping:
                    self.reload()
            if self.stopping and not self.children:
                return 0

    def reload(self) -> None:
        if not self.config_path:  # started from a snapshot, not a file: nothing to read again
            return
        try:
            # a worker forked from now on (a replacement) starts with this configuration; the
            # listener and the worker count stay those of the running process
            snap = load(self.config_path, port=self.snap.port, listen_ip=self.snap.listen_ip,
                        workers=self.snap.workers)
        except ConfigError as exc:
            log.error("reload of %s refused, keeping the running configuration:\n  %s", self.config_path,
                      "\n  ".join(exc.problems))
            return
        change = listener_change(self.snap.tls, snap.tls)
        if change is not None:  # the workers would refuse it too; they are not asked
            log.error("reload of %s refused, keeping the running configuration:\n  %s", self.config_path, change)
            return
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
