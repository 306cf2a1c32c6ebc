#!/usr/bin/env python3
"""fastproxy benchmark harness (driven by bench/run.sh; see bench/README.md).

Starts the backend (nginx), nginx as reverse proxy, haproxy, fastproxy plain and fastproxy with
the full traffic stack; runs wrk against each of them, interleaved, repetition after repetition;
measures the proxy process's CPU time per request (utime+stime from /proc/PID/stat) and its peak
RSS (VmHWM from /proc/PID/status, reset before every run through /proc/PID/clear_refs); then the
idle keep-alive connection scenario; then bench/micro.py and the Python per request without
sockets (bench/micro_request.py, bench/skeleton.py). With `--ceiling 2,4,8` it also measures the
bare proxy burning that much Python per request (the ceiling experiment). Prints a table and writes
bench/results/bench-<time>.json. Every server it started is stopped on exit, error, Ctrl-C or
SIGTERM.

TLS: nginx and fastproxy also terminate TLS 1.3 (one certificate, made at bench time with
scripts/make-cert.sh) for the https scenarios: keep-alive GET, and a new connection (a new
handshake) per request with `Connection: close`.

Placement: every proxy has 1 worker pinned to core 0 (the proxies run side by side but only the
one under test gets traffic); the backend nginx (1 worker) and wrk -t1 share core 1.

Subcommand `idle` (used internally): opens N keep-alive connections, sends one GET on each, keeps
them open until told on stdin, then reports how many are still open.
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import identity  # bench/identity.py: the token every client sends, the JWK Set fastproxy-full.json reads

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONFIGS = BENCH / "configs"
RESULTS = BENCH / "results"

PORTS = {"backend": 19080, "nginx": 19081, "haproxy": 19082, "fastproxy": 19083, "fastproxy-full": 19084,
         "bare": 19085, "nginx-tls": 19090, "fastproxy-tls": 19091}
PROXY_CORE = "0"
LOAD_CORE = "1"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) fastproxy-bench/1.0"
# Every client sends the benchmark's token (bench/identity.py), to every server alike: the full
# stack's auth/validator checks it (verified once, then from its cache). Set by start_servers.
AUTH = {"token": ""}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# target name -> (label in the table, server key, is a proxy)
TARGETS = [
    ("backend", "backend (nginx, direct)"),
    ("nginx", "nginx proxy"),
    ("haproxy", "haproxy"),
    ("fastproxy", "fastproxy plain"),
    ("fastproxy-full", "fastproxy full stack"),
    ("bare", "bare uvloop proxy (floor)"),
    ("nginx-tls", "nginx proxy, TLS"),
    ("fastproxy-tls", "fastproxy plain, TLS"),
]
TLS_TARGETS = {"nginx-tls", "fastproxy-tls"}  # they serve the https scenarios only, the others the rest
LABEL = dict(TARGETS)
CEILING_WORK: dict = {}  # ceiling target name -> microseconds of Python it burns per request


def add_ceiling_targets(work_us: list) -> list:
    """The ceiling experiment: one more bare proxy per value, burning that many microseconds of
    Python per request (`bare_proxy.py WORK_US`), on ports from 19086. Returns their names."""
    names = []
    for i, us in enumerate(work_us):
        name = f"bare+{us:g}us"
        PORTS[name] = 19086 + i
        TARGETS.append((name, f"floor + {us:g} us Python"))
        LABEL[name] = TARGETS[-1][1]
        CEILING_WORK[name] = us
        names.append(name)
    return names

# scenario key -> (path, wrk lua script or None, description)
SCENARIOS = {
    "get": ("/hello", None, "GET, 14-byte body"),
    "post16k": ("/post", BENCH / "post16k.lua", "POST 16 KiB body"),
    "big1m": ("/big", None, "GET, 1 MiB body"),
    "https": ("/hello", None, "GET over TLS 1.3, keep-alive, 14-byte body"),
    "handshake": ("/hello", None, "GET over TLS 1.3, Connection: close: one handshake per request"),
}
# the https scenarios: the extra request headers of each; measured against TLS_TARGETS, whose
# ratio column compares with nginx terminating TLS
TLS_SCENARIOS = {"https": [], "handshake": ["Connection: close"]}


def runs_on(target: str, scenario: str) -> bool:
    return (target in TLS_TARGETS) == (scenario in TLS_SCENARIOS)


def baseline(scenario: str) -> str:
    """The server of the `x nginx` column: nginx, terminating TLS in the https scenarios."""
    return "nginx-tls" if scenario in TLS_SCENARIOS else "nginx"

LIMITS: dict = {}  # open-files limit and the connection caps derived from it
_stop_hooks: list = []
_current_child: list = []  # the wrk / helper subprocess running now, killed on interrupt


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readers


def proc_stat(pid: int) -> list:
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()  # fields from 3 (state) on


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    f = proc_stat(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK  # fields 14 and 15


def start_time(pid: int) -> str:
    return proc_stat(pid)[19]  # field 22


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def children_of(pid: int) -> list:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(proc_stat(int(d))[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(out)


def core_times() -> dict:
    """cpu index -> (busy jiffies, total jiffies, steal jiffies) from /proc/stat. Busy includes
    steal: time the hypervisor gave to other guests, which this machine's cores did not run."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out[m.group(1)] = (sum(v[:8]) - idle, sum(v[:8]), v[7] if len(v) > 7 else 0)
    return out


def core_busy(before: dict, after: dict, field: int = 0) -> dict:
    """cpu index -> percent of the interval busy (field 0) or stolen by the hypervisor (field 2)."""
    res = {}
    for k in after:
        if k in before:
            part = after[k][field] - before[k][field]
            total = after[k][1] - before[k][1]
            res[k] = round(100.0 * part / total, 1) if total else None
    return res


# ---------------------------------------------------------------------------------------------
# servers


def http_get_ok(port: int, path: str = "/hello", timeout: float = 1.0, tls: bool = False) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            s = raw
            if tls:  # the bench's self-signed certificate: not verified
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                s = ctx.wrap_socket(raw, server_hostname="localhost")
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: {USER_AGENT}\r\n"
                      f"Authorization: Bearer {AUTH['token']}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:  # (ssl.SSLError too)
        return False


class Server:
    """One server process group started by us: `pid` is the process we spawned (its own session,
    so its pgid), `measured` the process that does the work (nginx: the worker)."""

    def __init__(self, key: str, argv: list, core: str, workdir: Path, pidfile: Optional[Path]):
        self.key = key
        self.argv = ["taskset", "-c", core] + argv
        self.workdir = workdir
        self.pidfile = pidfile
        self.proc: Optional[subprocess.Popen] = None
        self.measured: Optional[int] = None
        self.logpath = workdir / f"{key}.log"

    def start(self, ready_line: Optional[str] = None, worker_child: bool = False) -> None:
        logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE if ready_line else logf,
                                     stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=str(self.workdir))
        _stop_hooks.append(self.stop)
        if self.pidfile:
            with open(self.pidfile, "a") as f:
                f.write(f"{self.proc.pid} {start_time(self.proc.pid)}\n")
        deadline = time.monotonic() + 30
        if ready_line:
            line = b""
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line or ready_line.encode() in line:
                    break
            if ready_line.encode() not in line:
                raise RuntimeError(f"{self.key} did not print its ready line; see {self.logpath}")

            def drain(stream=self.proc.stdout, out=logf):
                for chunk in iter(lambda: stream.read1(65536), b""):
                    out.write(chunk)
                    out.flush()
            threading.Thread(target=drain, daemon=True).start()
        port = PORTS[self.key]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.key} exited with status {self.proc.returncode}; see {self.logpath}")
            if http_get_ok(port, tls=self.key in TLS_TARGETS):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{self.key} did not answer on port {port}; see {self.logpath}")
        self.measured = self.proc.pid
        if worker_child:
            kids = children_of(self.proc.pid)
            if len(kids) != 1:
                raise RuntimeError(f"{self.key}: expected one worker process, found {kids}")
            self.measured = kids[0]
        log(f"{self.key} ready on 127.0.0.1:{port} (pid {self.proc.pid}, measured pid {self.measured})")

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group we created: leftover workers
            except ProcessLookupError:
                pass
            p.wait(timeout=5)
        except Exception as exc:  # noqa: BLE001 - best effort on the way out
            log(f"stopping {self.key}: {exc}")


def render(template: Path, out: Path, values: dict) -> Path:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise RuntimeError(f"{template}: unfilled placeholders {sorted(set(leftover))}")
    out.write_text(text)
    return out


def start_servers(work: Path, keepalive: int, pidfile: Optional[Path], python: str,
                  ceiling: tuple = ()) -> dict:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    user_line = "user root root;" if os.geteuid() == 0 else ""
    (work / "www").mkdir(exist_ok=True)
    (work / "www" / "big").write_bytes(os.urandom(1 << 20))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    LIMITS.update(nofile=nofile, nginx_worker_connections=min(20000, nofile - 100),
                  haproxy_maxconn=min(25000, (nofile - 200) // 2))
    AUTH["token"] = identity.make(work)  # work/jwks.json, read by fastproxy-full.json
    common = {"DIR": work, "BACKEND_PORT": PORTS["backend"], "USER_LINE": user_line, "NOFILE": nofile,
              "WORKER_CONNECTIONS": LIMITS["nginx_worker_connections"], "MAXCONN": LIMITS["haproxy_maxconn"]}
    servers = {}
    cfg = render(CONFIGS / "nginx-backend.conf", work / "nginx-backend.conf", common)
    s = Server("backend", [nginx, "-e", str(work / "nginx-backend.error.log"), "-p", str(work), "-c", str(cfg)],
               LOAD_CORE, work, pidfile)
    s.start(worker_child=True)
    servers["backend"] = s
    cfg = render(CONFIGS / "nginx-proxy.conf", work / "nginx-proxy.conf",
                 dict(common, PORT=PORTS["nginx"], KEEPALIVE=keepalive))
    s = Server("nginx", [nginx, "-e", str(work / "nginx-proxy.error.log"), "-p", str(work), "-c", str(cfg)],
               PROXY_CORE, work, pidfile)
    s.start(worker_child=True)
    servers["nginx"] = s
    # one certificate for both TLS servers (ECDSA P-256, the names of 127.0.0.1 and localhost)
    subprocess.run([str(ROOT / "scripts" / "make-cert.sh"), str(work / "certs"), "localhost"], check=True,
                   capture_output=True, timeout=60)
    cfg = render(CONFIGS / "nginx-proxy-tls.conf", work / "nginx-proxy-tls.conf",
                 dict(common, PORT=PORTS["nginx-tls"], KEEPALIVE=keepalive))
    s = Server("nginx-tls", [nginx, "-e", str(work / "nginx-proxy-tls.error.log"), "-p", str(work), "-c", str(cfg)],
               PROXY_CORE, work, pidfile)
    s.start(worker_child=True)
    servers["nginx-tls"] = s
    cfg = render(CONFIGS / "haproxy.cfg", work / "haproxy.cfg", dict(common, PORT=PORTS["haproxy"]))
    s = Server("haproxy", [haproxy, "-db", "-f", str(cfg)], PROXY_CORE, work, pidfile)
    s.start()
    servers["haproxy"] = s
    for key, name in (("fastproxy", "fastproxy-plain.json"), ("fastproxy-full", "fastproxy-full.json"),
                      ("fastproxy-tls", "fastproxy-tls.json")):
        cfg = render(CONFIGS / name, work / name, common)
        chk = subprocess.run([python, "-m", "fastproxy", "check", "-c", str(cfg)], cwd=ROOT,
                             capture_output=True, text=True)
        if chk.returncode != 0:
            raise RuntimeError(f"fastproxy check {cfg} failed:\n{chk.stdout}{chk.stderr}")
        s = Server(key, [python, "-m", "fastproxy", "run", "-c", str(cfg), "-p", str(PORTS[key]),
                         "--log-level", "warning"], PROXY_CORE, work, pidfile)
        s.start(ready_line="fastproxy ready:")
        servers[key] = s
    # the floor of the design: bench/bare_proxy.py (no features, one backend connection per client)
    s = Server("bare", [python, str(BENCH / "bare_proxy.py"), str(PORTS["bare"]), str(PORTS["backend"])],
               PROXY_CORE, work, pidfile)
    s.start(ready_line="bare proxy ready")
    servers["bare"] = s
    for name in ceiling:
        s = Server(name, [python, str(BENCH / "bare_proxy.py"), str(PORTS[name]), str(PORTS["backend"]),
                          f"{CEILING_WORK[name]:g}"], PROXY_CORE, work, pidfile)
        s.start(ready_line="bare proxy ready")
        servers[name] = s
    return servers


# ---------------------------------------------------------------------------------------------
# wrk

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparseable wrk duration {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {"non2xx": 0, "socket_errors": {}}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    if not m:
        raise ValueError("no request count in wrk output:\n" + out)
    res["requests"] = int(m.group(1))
    res["wrk_seconds"] = _ms(m.group(2) + m.group(3)) / 1000.0
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Transfer/sec:\s+(\S+)", out)
    res["transfer_per_sec"] = m.group(1) if m else None
    return res


def run_wrk(port: int, path: str, conns: int, seconds: float, script: Optional[Path], tls: bool = False,
            headers: tuple = ()) -> dict:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-H", f"User-Agent: {USER_AGENT}",
            "-H", f"Authorization: Bearer {AUTH['token']}"]
    for h in headers:
        argv += ["-H", h]
    if script:
        argv += ["-s", str(script)]
    argv.append(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _current_child.append(p)
    try:
        out, _ = p.communicate(timeout=seconds + 60)
    finally:
        _current_child.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"wrk failed ({p.returncode}):\n{out}")
    return parse_wrk(out)


def measure(servers: dict, target: str, scenario: str, conns: int, seconds: float) -> dict:
    path, script, _ = SCENARIOS[scenario]
    srv = servers[target]
    backend = servers["backend"]
    pid = srv.measured
    hwm_reset = reset_hwm(pid)
    cpu0, bcpu0, cores0, t0 = cpu_seconds(pid), cpu_seconds(backend.measured), core_times(), time.monotonic()
    res = run_wrk(PORTS[target], path, conns, seconds, script, tls=scenario in TLS_SCENARIOS,
                  headers=tuple(TLS_SCENARIOS.get(scenario, ())))
    cpu1, bcpu1, cores1, t1 = cpu_seconds(pid), cpu_seconds(backend.measured), core_times(), time.monotonic()
    wall = t1 - t0
    n = max(res["requests"], 1)
    res.update(
        target=target, scenario=scenario, conns=conns, duration_s=seconds,
        cpu_s=round(cpu1 - cpu0, 3),
        cpu_us_per_req=round((cpu1 - cpu0) / n * 1e6, 2),
        cpu_util_pct=round(100.0 * (cpu1 - cpu0) / wall, 1),
        backend_cpu_us_per_req=round((bcpu1 - bcpu0) / n * 1e6, 2),
        peak_rss_kb=status_kb(pid, "VmHWM"), peak_rss_is_run_peak=hwm_reset,
        core_busy_pct=core_busy(cores0, cores1),
        core_steal_pct=core_busy(cores0, cores1, 2),
    )
    # CPU time spent on the proxy's core by anything but the proxy: other work on the machine
    # (the other servers here are idle). A large value means the run was disturbed.
    busy = res["core_busy_pct"].get(PROXY_CORE)
    res["proxy_core_other_pct"] = (round(max(0.0, busy - res["cpu_util_pct"]), 1)
                                   if busy is not None and target != "backend" else None)
    errs = sum(res["socket_errors"].values()) + res["non2xx"]
    log(f"  {scenario:9} c={conns:<4} {target:15} {res['rps']:>10.0f} req/s  p99 {fmt_ms(res['p99_ms'])}  "
        f"cpu {res['cpu_us_per_req']} us/req  rss {res['peak_rss_kb'] // 1024} MiB"
        + (f"  ERRORS {errs}" if errs else ""))
    return res


# ---------------------------------------------------------------------------------------------
# idle keep-alive connections


async def _idle_client(port: int, n: int, sources: list, concurrency: int, token: str) -> None:
    sem = asyncio.Semaphore(concurrency)
    conns: list = []
    failures = 0
    request = (f"GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: {USER_AGENT}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()

    async def open_one(i: int) -> None:
        nonlocal failures
        async with sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
                sock.bind((sources[i % len(sources)], 0))
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
                reader, writer = await asyncio.open_connection(sock=sock)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise OSError(head[:40])
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                await reader.readexactly(int(m.group(1)) if m else 0)
                conns.append((reader, writer))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                failures += 1
                sock.close()
                if failures <= 3:
                    print(f"idle: connection {i} failed: {exc!r}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(n)))
    print(f"OPEN {len(conns)} {failures} {time.monotonic() - t0:.2f}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the harness measures now
    await asyncio.sleep(0.2)
    alive = sum(1 for r, _ in conns if not r.at_eof())
    print(f"ALIVE {alive}", flush=True)
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.2)


def idle_main(argv: list) -> int:
    ap = argparse.ArgumentParser(prog="harness.py idle")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--sources", default="127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--token", default="", help="the benchmark's token (bench/identity.py)")
    a = ap.parse_args(argv)
    raise_nofile()
    asyncio.run(_idle_client(a.port, a.n, a.sources.split(","), a.concurrency, a.token))
    return 0


def measure_idle(servers: dict, target: str, n: int, python: str) -> dict:
    pid = servers[target].measured
    time.sleep(0.5)
    rss0 = status_kb(pid, "VmRSS")
    reset_hwm(pid)
    p = subprocess.Popen(["taskset", "-c", LOAD_CORE, python, str(Path(__file__).resolve()), "idle",
                          "--port", str(PORTS[target]), "-n", str(n), "--token", AUTH["token"]],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    _current_child.append(p)
    try:
        line = p.stdout.readline().split()
        if not line or line[0] != "OPEN":
            raise RuntimeError(f"idle client failed for {target}: {line}")
        opened, failed, secs = int(line[1]), int(line[2]), float(line[3])
        time.sleep(1.0)
        rss1 = status_kb(pid, "VmRSS")
        hwm = status_kb(pid, "VmHWM")
        p.stdin.write("\n")
        p.stdin.flush()
        line = p.stdout.readline().split()
        alive = int(line[1]) if line and line[0] == "ALIVE" else None
        p.wait(timeout=60)
    finally:
        _current_child.remove(p)
        if p.poll() is None:
            p.kill()
    per = (rss1 - rss0) * 1024 / opened if opened else None
    res = dict(target=target, requested=n, opened=opened, failed=failed, open_seconds=secs,
               still_open=alive, rss_before_kb=rss0, rss_after_kb=rss1, peak_rss_kb=hwm,
               bytes_per_conn=round(per) if per is not None else None)
    log(f"  idle {target:15} opened {opened}/{n} in {secs}s, still open {alive}, RSS {rss0 // 1024} -> "
        f"{rss1 // 1024} MiB, {res['bytes_per_conn']} B/conn")
    return res


# ---------------------------------------------------------------------------------------------
# report


def machine_info(python: str) -> dict:
    def cmd(argv: list) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
            return (r.stdout + r.stderr).strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rev = cmd(["git", "rev-parse", "HEAD"])
    dirty = bool(cmd(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "os": cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": cmd([python, "-c", "import sys; print(sys.version.split()[0])"]),
        "nginx": cmd(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": cmd(["haproxy", "-v"]).splitlines()[0] if cmd(["haproxy", "-v"]) else "",
        "wrk": cmd(["wrk", "-v"]).splitlines()[0] if cmd(["wrk", "-v"]) else "",
        "git_revision": rev,
        "git_dirty": dirty,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "mem_total_kb": status_meminfo(),
    }


def status_meminfo() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


def summarize(runs: list) -> list:
    """One row per (scenario, conns, target): medians over the repetitions."""
    base = {(r["scenario"], r["conns"], r["rep"]): r["rps"] for r in runs if r["target"] == baseline(r["scenario"])}
    for r in runs:
        b = base.get((r["scenario"], r["conns"], r["rep"]))
        r["ratio_to_nginx"] = round(r["rps"] / b, 3) if b else None
    rows = []
    seen = []
    for r in runs:
        k = (r["scenario"], r["conns"], r["target"])
        if k not in seen:
            seen.append(k)
    order = {t: i for i, (t, _) in enumerate(TARGETS)}
    sc_order = {s: i for i, s in enumerate(SCENARIOS)}
    seen.sort(key=lambda k: (sc_order[k[0]], k[1], order[k[2]]))
    for sc, conns, target in seen:
        rs = [r for r in runs if (r["scenario"], r["conns"], r["target"]) == (sc, conns, target)]
        med = lambda key: statistics.median([r[key] for r in rs if r.get(key) is not None]) \
            if any(r.get(key) is not None for r in rs) else None  # noqa: E731
        rps = [r["rps"] for r in rs]
        rows.append({
            "scenario": sc, "conns": conns, "target": target, "reps": len(rs),
            "rps_median": round(med("rps"), 1), "rps_all": rps,
            "rps_spread_pct": round(100 * (max(rps) - min(rps)) / statistics.median(rps), 1) if len(rps) > 1 else 0.0,
            "ratio_to_nginx_median": med("ratio_to_nginx"),
            "p50_ms_median": med("p50_ms"), "p99_ms_median": med("p99_ms"),
            "cpu_us_per_req_median": med("cpu_us_per_req"), "cpu_util_pct_median": med("cpu_util_pct"),
            "peak_rss_kb_max": max(r["peak_rss_kb"] for r in rs),
            "proxy_core_other_pct_median": med("proxy_core_other_pct"),
            "steal_pct_max": max((max(v for v in r["core_steal_pct"].values() if v is not None) for r in rs),
                                 default=None),
            "errors": sum(sum(r["socket_errors"].values()) + r["non2xx"] for r in rs),
        })
    return rows


def fmt_ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.0f}us" if v < 1 else f"{v:.2f}ms" if v < 100 else f"{v:.0f}ms"


def table(rows: list, idle: list) -> str:
    head = (f"{'scenario':<17} {'server':<24} {'req/s':>9} {'spread':>7} {'x nginx':>8} {'p50':>8} "
            f"{'p99':>8} {'cpu us/req':>10} {'cpu%':>5} {'peak RSS':>9} {'other%':>6} {'steal%':>6}")
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        sc = f"{r['scenario']} c={r['conns']}"
        if last is not None and sc != last:
            lines.append("")
        last = sc
        ratio = f"{r['ratio_to_nginx_median']:.2f}" if r["ratio_to_nginx_median"] is not None else "-"
        err = f"  ({r['errors']} errors)" if r["errors"] else ""
        o = r["proxy_core_other_pct_median"]
        other = "-" if o is None else f"{o:.0f}"
        st = r.get("steal_pct_max")
        steal = "-" if st is None else f"{st:.0f}"
        spread = f"{r['rps_spread_pct']:.1f}%" if r["reps"] > 1 else "-"
        lines.append(
            f"{sc:<17} {LABEL[r['target']]:<24} {r['rps_median']:>9.0f} {spread:>7} "
            f"{ratio:>8} {fmt_ms(r['p50_ms_median']):>8} {fmt_ms(r['p99_ms_median']):>8} "
            f"{r['cpu_us_per_req_median']:>10.1f} {r['cpu_util_pct_median']:>5.0f} "
            f"{r['peak_rss_kb_max'] / 1024:>7.1f}Mi {other:>6} {steal:>6}{err}")
    if idle:
        lines.append("")
        h2 = f"{'idle keep-alive':<17} {'server':<24} {'open':>9} {'alive':>7} {'RSS before':>11} {'RSS after':>10} {'bytes/conn':>10}"
        lines += [h2, "-" * len(h2)]
        for r in idle:
            lines.append(f"{'c=' + str(r['requested']):<17} {LABEL[r['target']]:<24} {r['opened']:>9} "
                         f"{r['still_open'] if r['still_open'] is not None else '-':>7} "
                         f"{r['rss_before_kb'] / 1024:>9.1f}Mi {r['rss_after_kb'] / 1024:>8.1f}Mi "
                         f"{r['bytes_per_conn'] if r['bytes_per_conn'] is not None else '-':>10}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        if hard != resource.RLIM_INFINITY and hard < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # root only
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def python_per_request(python: str, n: int) -> list:
    """fastproxy's own Python per request (bench/micro_request.py, plain and full-stack configs)
    and the skeleton's (bench/skeleton.py): the best of 3 runs each, pinned to the proxy core."""
    todo = [("fastproxy plain", [str(BENCH / "micro_request.py"), str(CONFIGS / "fastproxy-plain.json"), str(n)]),
            ("fastproxy full stack", [str(BENCH / "micro_request.py"), str(CONFIGS / "fastproxy-full.json"), str(n)]),
            ("skeleton (the work alone)", [str(BENCH / "skeleton.py"), str(n)])]
    out = []
    for name, args in todo:
        best = None
        for _ in range(3):
            r = subprocess.run(["taskset", "-c", PROXY_CORE, python] + args, cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
            if r.returncode != 0:
                log(f"{args[0]} failed:\n{r.stderr}")
                break
            us = float(r.stdout.split(": ", 1)[1].split()[0])
            best = us if best is None else min(best, us)
        if best is not None:
            out.append({"name": name, "us_per_request": best})
    return out


def cleanup() -> None:
    for p in list(_current_child):
        if p.poll() is None:
            p.kill()
    while _stop_hooks:
        _stop_hooks.pop()()


def on_signal(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list) -> int:
    if argv and argv[0] == "idle":
        return idle_main(argv[1:])
    ap = argparse.ArgumentParser(description="fastproxy benchmark suite (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="1 repetition, short runs (~1-2 minutes)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--duration", type=int, help="seconds per GET run (default 7, quick 3)")
    ap.add_argument("--body-duration", type=int, help="seconds per POST/1 MiB run (default 4, quick 2)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds per server (default 3, quick 1)")
    ap.add_argument("--conns", default="64,256", help="connection counts of the GET scenario")
    ap.add_argument("--body-conns", type=int, default=64, help="connections of the POST/1 MiB scenarios")
    ap.add_argument("--tls-conns", type=int, default=64, help="connections of the https scenarios")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle keep-alive connections (0: skip)")
    ap.add_argument("--targets", default=",".join(t for t, _ in TARGETS), help="servers to measure")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    ap.add_argument("--no-micro", action="store_true", help="skip bench/micro.py")
    ap.add_argument("--out", help="JSON output path (default bench/results/bench-<time>.json)")
    ap.add_argument("--pidfile", help="append 'pid starttime' of every server started (for run.sh's trap)")
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="python running fastproxy")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with configs and logs")
    ap.add_argument("--ceiling", default="",
                    help="also measure the bare proxy burning these microseconds of Python per request, "
                         "e.g. 2,4,8, in the GET scenario (the ceiling experiment; bench/README.md)")
    a = ap.parse_args(argv)
    ceiling = add_ceiling_targets([float(v) for v in a.ceiling.split(",") if v])
    reps = a.reps or (1 if a.quick else 3)
    dur = a.duration or (3 if a.quick else 7)
    bdur = a.body_duration or (2 if a.quick else 4)
    warm = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    conns = [int(c) for c in a.conns.split(",") if c]
    targets = [t for t in a.targets.split(",") if t] + ceiling
    scenarios = [s for s in a.scenarios.split(",") if s]
    for t in targets:
        if t not in LABEL:
            ap.error(f"unknown target {t!r}")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if "nginx" not in targets:
        log("note: nginx proxy not measured: the ratio column stays empty")
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 CPUs: proxy and load generator share a core")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    nofile = raise_nofile()
    if a.idle_conns and nofile < a.idle_conns + 1000:
        log(f"warning: open-files limit {nofile} is low for {a.idle_conns} idle connections")

    plan = []  # (scenario, conns)
    for s in scenarios:
        for c in (conns if s == "get" else [a.tls_conns] if s in TLS_SCENARIOS else [a.body_conns]):
            plan.append((s, c))
    started = dt.datetime.now(dt.timezone.utc)
    info = machine_info(a.python)
    log(f"revision {info['git_revision'][:12]}{' (dirty tree)' if info['git_dirty'] else ''}, "
        f"{info['nproc']} CPUs ({info['cpu_model']}), reps {reps}, {dur}s per GET run, {bdur}s per body run")
    work = Path(tempfile.mkdtemp(prefix="fastproxy-bench-"))
    pidfile = Path(a.pidfile) if a.pidfile else None
    runs: list = []
    idle: list = []
    micro: Optional[dict] = None
    status = 0
    try:
        servers = start_servers(work, max(conns + [a.body_conns]), pidfile, a.python, tuple(ceiling))
        log(f"warm-up: {warm}s per server")
        for t in targets:
            if warm > 0:
                run_wrk(PORTS[t], "/hello", conns[0], warm, None, tls=t in TLS_TARGETS)
                if "post16k" in scenarios and t not in TLS_TARGETS:
                    run_wrk(PORTS[t], "/post", a.body_conns, max(warm // 3, 1), BENCH / "post16k.lua")
        for rep in range(1, reps + 1):
            log(f"repetition {rep}/{reps}")
            order = targets[rep - 1:] + targets[:rep - 1]  # rotate who goes first
            for s, c in plan:
                for t in order:
                    if t in ceiling and s != "get":
                        continue  # the ceiling experiment is about the per-request cost
                    if not runs_on(t, s):
                        continue
                    r = measure(servers, t, s, c, dur if s == "get" or s in TLS_SCENARIOS else bdur)
                    r["rep"] = rep
                    runs.append(r)
                    time.sleep(0.3)
        if a.idle_conns:
            log(f"idle keep-alive connections: {a.idle_conns} per proxy")
            for t in targets:
                if t == "backend" or t.startswith("bare") or t in TLS_TARGETS:  # (bare: one backend connection
                    # per client, not pooled; the TLS servers are the plain ones with TLS on)
                    continue
                n = a.idle_conns
                if t == "haproxy" and n > LIMITS["haproxy_maxconn"] - 100:
                    n = LIMITS["haproxy_maxconn"] - 100
                    log(f"  haproxy: maxconn {LIMITS['haproxy_maxconn']} (2 fds per connection under the "
                        f"open-files limit {LIMITS['nofile']}): measuring {n} idle connections")
                idle.append(measure_idle(servers, t, n, a.python))
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}): stopping servers")
        status = 130
    except Exception as exc:  # noqa: BLE001
        log(f"error: {exc}")
        status = 1
    finally:
        cleanup()
        if a.keep_tmp or status:
            log(f"kept {work} (rendered configs and server logs)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if status:
        return status
    if not a.no_micro:
        log("micro-benchmarks (bench/micro.py, pinned to core 0)")
        try:
            r = subprocess.run(["taskset", "-c", PROXY_CORE, a.python, str(BENCH / "micro.py"), "--json"]
                               + (["--quick"] if a.quick else []), cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
            if r.returncode == 0:
                micro = json.loads(r.stdout)
                micro["per_request"] = python_per_request(a.python, 30_000 if a.quick else 200_000)
            else:
                log(f"micro.py failed:\n{r.stderr}")
        except KeyboardInterrupt:
            return 130
    rows = summarize(runs)
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {"quick": a.quick, "reps": reps, "duration_s": dur, "body_duration_s": bdur,
                     "warmup_s": warm, "conns": conns, "body_conns": a.body_conns, "tls_conns": a.tls_conns,
                     "idle_conns": a.idle_conns, "limits": LIMITS, "proxy_core": PROXY_CORE, "load_core": LOAD_CORE,
                     "ports": PORTS, "user_agent": USER_AGENT,
                     "scenarios": {k: {"path": v[0], "script": v[1] and v[1].name, "what": v[2]}
                                   for k, v in SCENARIOS.items()}},
        "summary": rows, "runs": runs, "idle": idle, "micro": micro,
    }
    RESULTS.mkdir(exist_ok=True)
    out = Path(a.out) if a.out else RESULTS / f"bench-{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(f"fastproxy benchmark  {started.strftime('%Y-%m-%d %H:%M UTC')}  rev {info['git_revision'][:12]}"
          f"{' (dirty)' if info['git_dirty'] else ''}  {info['cpu_model']} x{info['nproc']}  "
          f"python {info['python']}  nginx {info['nginx']}")
    print(f"reps {reps} (value = median), GET {dur}s / body {bdur}s per run; proxy on core {PROXY_CORE}, "
          f"backend + wrk -t1 on core {LOAD_CORE}")
    print()
    print(table(rows, idle))
    if micro:
        print()
        print("micro-benchmarks (timeit, best of 5, per call):")
        for m in micro["results"]:
            print(f"  {m['name']:<44} {m['ns_per_call']:>9.0f} ns")
        print()
        print("Python per proxied request, no sockets (best of 3):")
        for m in micro.get("per_request", []):
            print(f"  {m['name']:<44} {m['us_per_request']:>9.2f} us")
    print()
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        cleanup()
