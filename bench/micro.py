#!/usr/bin/env python3
"""Micro-benchmarks of fastproxy's hot pure functions: per-call cost with timeit, best of 5.

    .venv/bin/python bench/micro.py            # table
    .venv/bin/python bench/micro.py --json     # JSON on stdout (used by bench/harness.py)
    taskset -c 0 .venv/bin/python bench/micro.py --quick

Measured:
  * route match       fastproxy.routing.RouteTable.match on a 40-route table (static, {param},
                      /* catch-all, 404)
  * bucket take       fastproxy.limits.bucket.TokenBucket.take (token granted; token refused)
  * target split      fastproxy.http.request.split_target (the per-request part of head parsing
                      that is ours; httptools' own parsing through ClientConnection is too coupled
                      to the server to time alone)
  * response build    fastproxy.http.response.simple_response (404 with body; 429 with
                      Retry-After and RateLimit headers)

"best of 5": timeit picks a loop count that runs >= 0.2 s (0.05 s with --quick), repeats it 5
times and keeps the fastest, which is the least disturbed by other work on the machine.
"""

import argparse
import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastproxy.http.request import split_target  # noqa: E402
from fastproxy.http.response import DateCache, simple_response  # noqa: E402
from fastproxy.limits.bucket import TokenBucket  # noqa: E402
from fastproxy.routing import RouteTable  # noqa: E402


def route_table() -> RouteTable:
    t = RouteTable()
    for i in range(20):
        t.add(f"/v1/static/resource{i}", "GET", f"static{i}")
    for name in ("users", "orders", "products", "carts", "invoices"):
        t.add(f"/v1/{name}/{{id}}", "GET", f"{name}-get")
        t.add(f"/v1/{name}/{{id}}", "PUT", f"{name}-put")
        t.add(f"/v1/{name}/{{id}}/items/{{item}}", "GET", f"{name}-item")
    t.add("/hello", "GET", "hello")
    t.add("/api/*", "GET", "api")
    t.add("/files/{bucket}/*", "GET", "files")
    t.add("/items", "POST", "items")
    return t


def cases() -> list:
    rt = route_table()
    match = rt.match
    assert match(b"GET", b"/v1/users/42/items/7")[0] == "users-item"
    assert match(b"GET", b"/api/a/b/c")[0] == "api"

    granted = TokenBucket(1e9, 10**12, 0.0)
    refused = TokenBucket(1.0, 1, 0.0)
    assert refused.take(0.0) and not refused.take(0.0)
    take_ok, take_no = granted.take, refused.take

    date = DateCache().header
    rl_headers = ((b"Retry-After", b"1"), (b"RateLimit-Policy", b"10;w=1"), (b"RateLimit", b"limit=10, remaining=0, reset=1"))

    env = {"match": match, "take_ok": take_ok, "take_no": take_no, "split_target": split_target,
           "simple_response": simple_response, "date": date, "rl_headers": rl_headers}
    # statements, not lambdas: timeit compiles them into its loop, so no extra call per iteration
    return env, [
        ("route match: static /hello", 'match(b"GET", b"/hello")'),
        ("route match: /v1/users/{id}/items/{item}", 'match(b"GET", b"/v1/users/42/items/7")'),
        ("route match: /api/* catch-all", 'match(b"GET", b"/api/v2/search/things")'),
        ("route match: miss (404)", 'match(b"GET", b"/nope/nothing/here")'),
        ("bucket take: granted", "take_ok(1.0)"),
        ("bucket take: refused", "take_no(0.0)"),
        ("split_target: /hello", 'split_target(b"/hello")'),
        ("split_target: path + query", 'split_target(b"/v1/users/42/items?page=2&per_page=50&q=abc")'),
        ("split_target: absolute-form", 'split_target(b"http://example.com/v1/users/42?x=1")'),
        ("simple_response: 404 with body", 'simple_response(404, date, b"404 page not found")'),
        ("simple_response: 429 + 3 headers", 'simple_response(429, date, b"", extra=rl_headers)'),
    ]


def bench(stmt: str, env: dict, min_time: float) -> float:
    """Seconds per call: best of 5 repeats of a loop timeit sized to run >= min_time."""
    timer = timeit.Timer(stmt, globals=env)
    number = 1
    while True:
        t = timer.timeit(number)
        if t >= min_time:
            break
        number = max(number * 2, int(number * min_time / max(t, 1e-9) * 1.1))
    return min(timer.repeat(repeat=5, number=number)) / number


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--quick", action="store_true", help="0.05 s per timing loop instead of 0.2 s")
    a = ap.parse_args()
    min_time = 0.05 if a.quick else 0.2
    results = []
    env, todo = cases()
    for name, stmt in todo:
        per = bench(stmt, env, min_time)
        results.append({"name": name, "ns_per_call": round(per * 1e9, 1)})
        if not a.json:
            print(f"{name:<44} {per * 1e9:>9.1f} ns/call", flush=True)
    if a.json:
        json.dump({"method": f"timeit, best of 5, loops >= {min_time}s", "python": sys.version.split()[0],
                   "results": results}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
