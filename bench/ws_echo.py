"""WebSocket echo throughput: messages per second through fastproxy against the same echo
backend directly, in the same run (bench/README.md "WebSocket echo").

    .venv/bin/python bench/ws_echo.py [--messages 100000] [--size 64] [--window 100] [--runs 3]

The backend is `scripts/ws-echo.py` (the `websockets` package) in its own process; fastproxy
runs `configs/fastproxy-ws.json` with one worker. The client is a raw socket: it sends
`--window` pre-built masked frames at a time and counts the echoed bytes, so that what is
measured is the backend and the hop, not a client library.
"""

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def open_ws(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {buf[:80]!r}")
    return s


def run(port: int, messages: int, size: int, window: int) -> float:
    """Messages per second, each echoed, `window` in flight."""
    if size >= 126:
        raise SystemExit("--size must be below 126 bytes (one-byte frame lengths)")
    s = open_ws(port)
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"m" * size))
    burst = (bytes((0x82, 0x80 | size)) + mask + payload) * window
    echo = 2 + size  # an unmasked server frame
    t0 = time.perf_counter()
    sent = got = 0
    while got < messages * echo:
        if sent < messages and sent * echo - got < window * echo:
            s.sendall(burst)
            sent += window
        got += len(s.recv(1 << 20))
    elapsed = time.perf_counter() - t0
    s.sendall(b"\x88\x80" + mask)  # a close frame, then the close
    s.close()
    return sent / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    backend_port, proxy_port = free_port(), free_port()
    with open(os.path.join(ROOT, "bench", "configs", "fastproxy-ws.json")) as f:
        cfg = f.read().replace("@BACKEND_PORT@", str(backend_port)).replace("@PORT@", str(proxy_port))
    tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    tmp.write(cfg)
    tmp.close()
    procs = [subprocess.Popen([PY, os.path.join(ROOT, "scripts", "ws-echo.py"), str(backend_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([PY, "-m", "fastproxy", "run", "-c", tmp.name], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        wait_port(backend_port)
        wait_port(proxy_port)
        run(backend_port, 2000, a.size, a.window)  # warm-up
        run(proxy_port, 2000, a.size, a.window)
        direct, proxied = [], []
        for _ in range(a.runs):
            direct.append(run(backend_port, a.messages, a.size, a.window))
            proxied.append(run(proxy_port, a.messages, a.size, a.window))
        d, p = statistics.median(direct), statistics.median(proxied)
        print(json.dumps({"messages": a.messages, "size": a.size, "window": a.window, "runs": a.runs,
                          "direct_msgs_per_s": round(d), "fastproxy_msgs_per_s": round(p),
                          "ratio": round(p / d, 3)}))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        os.unlink(tmp.name)


if __name__ == "__main__":
    main()
