"""Redis-limited routes against a locally limited one, in one run (bench/README.md "Shared
limits: one Redis and a cluster").

    .venv/bin/python bench/redis_limits.py [--duration 10] [--connections 64] [--runs 3]

Starts an nginx backend (`configs/nginx-backend.conf`), one redis-server, a 3-master Redis
Cluster (loopback ports, no persistence) and one fastproxy worker with three routes whose
limits never refuse (`max_rate` 1e9): `/local` (qos/ratelimit/router), `/redis` (the same on
one Redis), `/cluster` (on the cluster). wrk runs each route in turn, interleaved `--runs`
times; the medians and their ratios to `/local` are printed as JSON. Needs wrk, nginx and
redis-server (bench/run.sh installs the first two, scripts/setup.sh --system the last).
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.redis_cluster import RedisCluster  # noqa: E402 - the tests' cluster, started the same way
from tests.redis_server import RedisServer  # noqa: E402
from tests.support import free_port  # noqa: E402

BIG = {"max_rate": 1_000_000_000, "capacity": 1_000_000_000}


def wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_backend(tmp: str, port: int) -> subprocess.Popen:
    with open(os.path.join(ROOT, "bench", "configs", "nginx-backend.conf")) as f:
        text = f.read()
    user = "user root;" if os.geteuid() == 0 else ""
    for k, v in {"@USER_LINE@": user, "@DIR@": tmp, "@BACKEND_PORT@": str(port), "@NOFILE@": "65536",
                 "@WORKER_CONNECTIONS@": "20000"}.items():
        text = text.replace(k, v)
    os.makedirs(os.path.join(tmp, "www"), exist_ok=True)
    conf = os.path.join(tmp, "nginx-backend.conf")
    with open(conf, "w") as f:
        f.write(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen([nginx, "-c", conf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk(port: int, path: str, duration: float, connections: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out:
        raise RuntimeError(f"wrk on {path}: {out}")
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fastproxy-redis-bench-")
    backend_port, proxy_port = free_port(), free_port()
    procs: list[subprocess.Popen] = [nginx_backend(tmp, backend_port)]
    redis = RedisServer(os.path.join(tmp, "redis"))
    cluster = RedisCluster(os.path.join(tmp, "cluster"))
    try:
        cfg = {"version": 3, "port": proxy_port, "listen_ip": "127.0.0.1", "output_encoding": "no-op",
               "host": [f"http://127.0.0.1:{backend_port}"],
               "endpoints": [
                   {"endpoint": "/local", "backend": [{"url_pattern": "/hello"}],
                    "extra_config": {"qos/ratelimit/router": BIG}},
                   {"endpoint": "/redis", "backend": [{"url_pattern": "/hello"}],
                    "extra_config": {"qos/ratelimit/router/redis": {"connection_name": "one", **BIG}}},
                   {"endpoint": "/cluster", "backend": [{"url_pattern": "/hello"}],
                    "extra_config": {"qos/ratelimit/router/redis": {"connection_name": "cluster", **BIG}}}],
               "extra_config": {
                   "fastproxy": {"workers": 1, "redis_timeout": "1s", "max_connections": 20000},
                   "redis": {"connection_pools": [{"name": "one", "address": f"127.0.0.1:{redis.port}"}],
                             "clusters": [{"name": "cluster", "addresses": cluster.addresses}]}}}
        path = os.path.join(tmp, "fastproxy.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        procs.append(subprocess.Popen([sys.executable, "-m", "fastproxy", "run", "-c", path], cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "fastproxy.log"), "w")))
        wait_port(backend_port)
        wait_port(proxy_port)
        for route in ("/local", "/redis", "/cluster"):  # warm-up
            wrk(proxy_port, route, 2, a.connections)
        rates: dict[str, list[float]] = {"/local": [], "/redis": [], "/cluster": []}
        for _ in range(a.runs):
            for route in rates:
                rates[route].append(wrk(proxy_port, route, a.duration, a.connections))
        med = {r: statistics.median(v) for r, v in rates.items()}
        print(json.dumps({"connections": a.connections, "duration": a.duration, "runs": a.runs,
                          "req_per_s": {r: round(v) for r, v in med.items()},
                          "redis_over_local": round(med["/redis"] / med["/local"], 3),
                          "cluster_over_local": round(med["/cluster"] / med["/local"], 3),
                          "cluster_over_redis": round(med["/cluster"] / med["/redis"], 3)}))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        redis.stop()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
