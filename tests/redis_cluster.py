"""A real 3-master Redis Cluster for the integration tests, on free loopback ports.

Three `redis-server --cluster-enabled yes` processes (tests/redis_server.py handles), joined
with `redis-cli --cluster create ... --cluster-replicas 0`, each master serving a third of the
slots; with `replicas=1`, six, each master with a replica that takes over when it fails. `cluster-node-timeout` is 1 s, so a dead master is marked failed quickly, and
`cluster-require-full-coverage no`, so the other masters keep serving their slots meanwhile
(the setting an operator who wants that degradation needs too). A killed master restarted on
its port and directory comes back with its slots (its nodes.conf), empty.
"""

import os
import random
import shutil
import socket
import subprocess
import time

from tests.redis_server import MISSING, RedisServer

CLUSTER_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                "--cluster-require-full-coverage", "no", "--repl-diskless-sync-delay", "0")


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis needs both below 65536."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster:
    def __init__(self, workdir: str, masters: int = 3, replicas: int = 0) -> None:
        cli = shutil.which("redis-cli") or ("/usr/bin/redis-cli" if os.path.exists("/usr/bin/redis-cli") else None)
        if cli is None:
            raise RuntimeError(MISSING)
        self.cli = cli
        self.nodes = [RedisServer(os.path.join(workdir, f"node{i}"), port=cluster_port(), extra_args=CLUSTER_ARGS)
                      for i in range(masters * (1 + replicas))]
        r = subprocess.run([cli, "--cluster", "create", *self.addresses, "--cluster-replicas", str(replicas),
                            "--cluster-yes"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed:\n{r.stdout}\n{r.stderr}")
        self.wait_ok()

    @property
    def addresses(self) -> list:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def info(self, node: RedisServer) -> str:
        r = subprocess.run([self.cli, "-p", str(node.port), "cluster", "info"], capture_output=True, text=True,
                           timeout=5)
        return r.stdout

    def replicas_synced(self) -> bool:
        for n in self.nodes:
            if not n.alive:
                continue
            out = subprocess.run([self.cli, "-p", str(n.port), "info", "replication"], capture_output=True, text=True,
                                 timeout=5).stdout
            if "role:slave" in out and "master_link_status:up" not in out:
                return False
        return True

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Every live node sees the whole cluster as ok, and every replica is in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in self.info(n) for n in self.nodes if n.alive) and self.replicas_synced():
                return
            time.sleep(0.05)  # polling interval
        raise RuntimeError("the cluster did not become ok:\n" + "\n".join(self.info(n) for n in self.nodes))

    def node_of(self, key: bytes) -> RedisServer:
        """The master serving `key`'s slot (CLUSTER SLOTS from a live node)."""
        from redis.crc import key_slot

        slot = key_slot(key)
        client = self.client()
        try:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        finally:
            client.close()
        raise AssertionError(f"no master for slot {slot}")

    def masters(self) -> list:
        """The nodes that are masters now (CLUSTER SLOTS)."""
        client = self.client()
        try:
            ports = {int(master[1]) for _, _, master, *_ in client.execute_command("CLUSTER", "SLOTS")}
        finally:
            client.close()
        return [n for n in self.nodes if n.port in ports]

    def client(self):
        import redis

        live = next(n for n in self.nodes if n.alive)
        return redis.Redis(host="127.0.0.1", port=live.port, socket_timeout=2, socket_connect_timeout=2)

    def get_hash(self, key: bytes, field: str):
        """HGET on the master of the key (None when it has no such key)."""
        import redis

        n = self.node_of(key)
        c = redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=2)
        try:
            return c.hget(key, field)
        finally:
            c.close()

    def flushall(self) -> None:
        import redis

        for n in self.nodes:
            if n.alive:
                c = redis.Redis(host="127.0.0.1", port=n.port, socket_timeout=2)
                try:
                    c.flushall()
                finally:
                    c.close()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
