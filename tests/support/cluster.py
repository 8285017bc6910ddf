"""Real Redis deployments for tests: a 3-master/3-replica Cluster and a Sentinel group.

Every process binds 127.0.0.1 on a free port, keeps its files in a temp dir, and is stopped
on exit even when the test fails. Startup waits on what the servers report (CLUSTER INFO,
SENTINEL masters), never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers import RedisServer, free_port, wait_until

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    import random
    import socket

    while True:
        port = random.randrange(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    """One redis-cli command against 127.0.0.1:port; its stdout."""
    done = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout


def _poll(cond: Callable[[], object], timeout: float, what: str) -> None:
    """`helpers.wait_until` for a state read through redis-cli, which fails while a node
    starts or restarts (that counts as "not yet")."""

    def tolerant() -> object:
        try:
            return cond()
        except (subprocess.SubprocessError, OSError):
            return False

    try:
        wait_until(tolerant, timeout, interval=0.05)
    except AssertionError:
        raise RuntimeError(f"{what} not reached within {timeout}s") from None


@dataclass
class Cluster:
    """Six cluster-enabled redis-servers joined by `redis-cli --cluster create`."""

    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def cluster_url(self) -> str:
        """The `redis+cluster://` URL with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def names_on_every_shard(self, stem: str, slot_of: Callable[[str], int]) -> list[str]:
        """One name per master (`stem0`, `stem1`, ...) whose slot (`slot_of(name)`) each
        master owns: the test's queues, channels or topics spread over every shard."""
        found: dict[int, str] = {}
        i = 0
        while len(found) < 3:  # the fixture's three masters
            name = f"{stem}{i}"
            found.setdefault(self.master_of(slot_of(name)), name)
            i += 1
        return list(found.values())

    def node_at(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Port of each live master -> its slot ranges, as the cluster reports them."""
        out: dict[int, list[tuple[int, int]]] = {}
        for node in self.nodes:
            if node.proc is None:
                continue
            for line in cli(node.port, "CLUSTER", "NODES").splitlines():
                parts = line.split()
                if "myself" in parts[2] and "master" in parts[2]:
                    ranges = []
                    for r in parts[8:]:
                        if r.startswith("["):
                            continue
                        lo, _, hi = r.partition("-")
                        ranges.append((int(lo), int(hi or lo)))
                    out[node.port] = ranges
        return out

    def master_of(self, slot: int) -> int:
        for port, ranges in self.masters().items():
            if any(lo <= slot <= hi for lo, hi in ranges):
                return port
        raise LookupError(f"no master serves slot {slot}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok and all 16384 slots are served by masters."""

        def ok() -> bool:
            live = [n for n in self.nodes if n.proc is not None]
            if not all("cluster_state:ok" in cli(n.port, "CLUSTER", "INFO") for n in live):
                return False
            served = sum(hi - lo + 1 for rs in self.masters().values() for lo, hi in rs)
            if served != 16384:
                return False
            for n in live:  # a replica that never synced cannot take over its master
                info = cli(n.port, "INFO", "replication")
                if "role:slave" in info and "master_link_status:up" not in info:
                    return False
            return True

        _poll(ok, timeout, "cluster_state:ok")

    def start_migrating(self, slot: int, to_port: int) -> int:
        """Marks `slot` as migrating from its master to `to_port`; the source's port."""
        source = self.master_of(slot)
        src_id = cli(source, "CLUSTER", "MYID").strip()
        dst_id = cli(to_port, "CLUSTER", "MYID").strip()
        cli(to_port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
        cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
        return source

    def migrate_keys(self, source: int, to_port: int, keys: list[str]) -> None:
        cli(source, "MIGRATE", "127.0.0.1", str(to_port), "", "0", "5000", "KEYS", *keys)

    def finish_migrating(self, slot: int, source: int, to_port: int) -> None:
        """Moves the slot's remaining keys and gives the slot to `to_port` everywhere."""
        while keys := cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            self.migrate_keys(source, to_port, keys)
        dst_id = cli(to_port, "CLUSTER", "MYID").strip()
        for port in self.masters():
            cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
        _poll(lambda: self.master_of(slot) == to_port, 30, f"slot {slot} moved")

    def kill_master_of(self, slot: int) -> int:
        """SIGKILLs the master serving `slot`; returns its port."""
        port = self.master_of(slot)
        self.node_at(port).kill()
        return port

    def wait_promoted(self, slot: int, dead: int, timeout: float = 30.0) -> int:
        """Waits until a live master other than `dead` serves `slot`; its port."""

        def promoted() -> bool:
            try:
                return self.master_of(slot) != dead
            except LookupError:
                return False

        _poll(promoted, timeout, f"failover of slot {slot}")
        self.wait_ok(timeout)
        return self.master_of(slot)


@contextlib.contextmanager
def running_cluster(
    *extra: str, node_timeout_ms: int = 3000, replicas: int = 1
) -> Iterator[Cluster]:
    """A Redis Cluster of 3 masters with `replicas` replicas each on loopback, stopped on
    exit."""
    with tempfile.TemporaryDirectory(prefix="meetq-cluster-") as d:
        cluster = Cluster()
        try:
            for i in range(3 * (1 + replicas)):
                node_dir = Path(d) / str(i)
                node_dir.mkdir()
                for attempt in range(5):  # another process may take a port we picked
                    node = RedisServer(
                        port=cluster_port(),
                        dir=node_dir,
                        extra=(
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            str(node_dir / "nodes.conf"),
                            "--cluster-node-timeout",
                            str(node_timeout_ms),
                            "--repl-diskless-sync-delay",
                            "0",
                            "--logfile",
                            str(node_dir / "redis.log"),
                            *extra,
                        ),
                    )
                    try:
                        node.start()
                        break
                    except RuntimeError:
                        log = node_dir / "redis.log"
                        if attempt == 4:
                            tail = log.read_text()[-2000:] if log.exists() else ""
                            raise RuntimeError(f"cluster node did not start: {tail}") from None
                cluster.nodes.append(node)
            addrs = [f"127.0.0.1:{p}" for p in cluster.ports]
            subprocess.run(
                [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", str(replicas),
                 "--cluster-yes"],
                capture_output=True, check=True, timeout=60,
            )  # fmt: skip
            cluster.wait_ok()
            yield cluster
        finally:
            for node in cluster.nodes:
                node.stop()


@dataclass
class SentinelGroup:
    """One master, one replica and three sentinels watching them as `master_name`."""

    master: RedisServer
    replica: RedisServer
    sentinels: list[subprocess.Popen[bytes]]
    sentinel_ports: list[int]
    master_name: str = "meetq"

    @property
    def url(self) -> str:
        """A `redis+sentinel://` URL naming all three sentinels."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def current_master(self) -> int:
        out = cli(
            self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name", self.master_name
        ).split()
        return int(out[1])


@contextlib.contextmanager
def running_sentinels(*extra: str) -> Iterator[SentinelGroup]:
    """A master, its replica and three sentinels on loopback, all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="meetq-sentinel-") as d:
        base = Path(d)
        (base / "m").mkdir()
        (base / "r").mkdir()
        master = RedisServer(
            port=free_port(), dir=base / "m", extra=("--repl-diskless-sync-delay", "0", *extra)
        )
        replica: RedisServer | None = None
        sentinels: list[subprocess.Popen[bytes]] = []
        ports: list[int] = []
        try:
            master.start()  # its port is final only once it started (helpers.RedisServer)
            replica = RedisServer(
                port=free_port(),
                dir=base / "r",
                extra=("--replicaof", "127.0.0.1", str(master.port), *extra),
            )
            replica.start()
            _poll(
                lambda: "master_link_status:up" in cli(replica.port, "INFO", "replication"),
                30,
                "replica link up",
            )
            for i in range(3):
                port = free_port()
                conf = base / f"sentinel-{i}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {base}\n"
                    f"sentinel monitor meetq 127.0.0.1 {master.port} 2\n"
                    "sentinel down-after-milliseconds meetq 1000\n"
                    "sentinel failover-timeout meetq 5000\n"
                    "sentinel parallel-syncs meetq 1\n"
                )
                redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
                sentinels.append(
                    subprocess.Popen(
                        [redis_server, str(conf), "--sentinel"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                ports.append(port)
            group = SentinelGroup(master, replica, sentinels, ports)
            _poll(
                lambda: all(
                    "num-other-sentinels" in cli(p, "SENTINEL", "master", "meetq")
                    and int(_field(cli(p, "SENTINEL", "master", "meetq"), "num-other-sentinels"))
                    == 2
                    for p in ports
                ),
                30,
                "sentinels see each other",
            )
            yield group
        finally:
            for proc in sentinels:
                proc.terminate()
            for proc in sentinels:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if replica is not None:
                replica.stop()
            master.stop()


def _field(reply: str, name: str) -> str:
    """A value from redis-cli's flat name/value listing of a SENTINEL reply."""
    lines = reply.splitlines()
    return lines[lines.index(name) + 1]
