"""Admin listener (loopback by default): `/__health` and `/metrics` (Prometheus text format).

With several workers, each worker publishes a snapshot of its counters once a second into a
shared run directory (`FASTPROXY_METRICS_DIR`, set by the master); the admin listener, served by
worker 0, sums them. A scrape therefore sees every worker, at most one second stale.
"""

import asyncio
import glob
import os
from typing import TYPE_CHECKING

import msgspec

from fastproxy import metrics as metrics_mod

if TYPE_CHECKING:
    from fastproxy.server.worker import Worker

METRICS_DIR_ENV = "FASTPROXY_METRICS_DIR"


def publish(w: "Worker") -> None:
    """Write this worker's counters for the admin listener (multi-worker mode only)."""
    d = os.environ.get(METRICS_DIR_ENV)
    if not d:
        return
    path = os.path.join(d, f"worker-{os.getpid()}.json")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode(w.metrics.snapshot()))
    os.replace(tmp, path)


def collect(w: "Worker") -> bytes:
    snaps = [w.metrics.snapshot()]
    d = os.environ.get(METRICS_DIR_ENV)
    if d:
        mine = f"worker-{os.getpid()}.json"
        for path in glob.glob(os.path.join(d, "worker-*.json")):
            if os.path.basename(path) == mine:
                continue
            try:
                with open(path, "rb") as f:
                    snaps.append(msgspec.json.decode(f.read()))
            except (OSError, msgspec.DecodeError):
                continue
    return metrics_mod.render(snaps)


async def start(w: "Worker") -> asyncio.Server:
    snap = w.snap

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while True:
                h = await asyncio.wait_for(reader.readline(), 5)
                if h in (b"\r\n", b"\n", b""):
                    break
            parts = line.split()
            path = parts[1].split(b"?")[0] if len(parts) >= 2 else b""
            if path == b"/__health":
                status, ctype = (b"503 Service Unavailable" if w.draining else b"200 OK"), b"application/json"
                body = w.health_body()
            elif path == b"/metrics":
                status, ctype, body = b"200 OK", b"text/plain; version=0.0.4", collect(w)
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"404 page not found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, snap.admin_ip, snap.admin_port, reuse_address=True)
