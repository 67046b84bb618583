"""A local Redis Cluster: masters with a replica each, from Debian's
`redis-server`, on free loopback ports (the tests' cluster, and what
`REDIS_CLUSTER=1` runs against on a laptop)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from movieservice.devstack.processes import ServerProcess, find_tool, free_port, redis_server

# Small, so that a killed master's replica takes over within a few seconds.
NODE_TIMEOUT_MS = 1000


@dataclass
class RedisClusterProcesses:
    """`masters` masters with `replicas` replicas each; `start()` creates the
    cluster (redis-cli --cluster create) and waits until every node reports
    it whole; `stop()` ends every node."""

    directory: Path
    masters: int = 3
    replicas: int = 1
    node_timeout_ms: int = NODE_TIMEOUT_MS
    nodes: list[ServerProcess] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> RedisClusterProcesses:
        try:
            for index in range(self.masters * (1 + self.replicas)):
                node_dir = self.directory / f"node-{index}"
                options = {
                    "cluster-enabled": "yes",
                    "cluster-config-file": str(node_dir / "nodes.conf"),
                    "cluster-node-timeout": str(self.node_timeout_ms),
                    # The bus port defaults to the port + 10000, which may be taken or past 65535.
                    "cluster-port": str(free_port()),
                    # A replica promotes itself however long it was cut off from its
                    # master (the default refuses after 10 x node timeout).
                    "cluster-replica-validity-factor": "0",
                    # A replica syncs at once (the default waits 5 s for others to join).
                    "repl-diskless-sync-delay": "0",
                }
                self.nodes.append(redis_server(node_dir, options=options).start())
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            create = [find_tool("redis-cli"), "--cluster", "create", *addresses]
            subprocess.run(
                [*create, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
            self.wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        """A startup node's URL (REDIS_URL, with REDIS_CLUSTER=1): the client finds the others."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def running(self) -> list[ServerProcess]:
        return [node for node in self.nodes if node.running]

    def primaries(self) -> list[ServerProcess]:
        """The running nodes that are masters now (after a failover, a former replica)."""
        return [node for node in self.running() if self._role(node) == "master"]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok, every slot has a live
        master, and every running replica is in sync with its master."""
        deadline = time.monotonic() + timeout
        while True:
            if (
                all(self._state_ok(node) for node in self.running())
                and len(self.primaries()) == self.masters
                and all(self._in_sync(node) for node in self.running())
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis cluster in {self.directory} is not ok after {timeout}s")
            time.sleep(0.1)

    def kill_primary(self) -> ServerProcess:
        """SIGKILL one master; returns it. Its replica takes over after the node timeout."""
        victim = self.primaries()[0]
        victim.kill()
        return victim

    def flushall(self) -> None:
        for node in self.primaries():
            self._cli(node, "FLUSHALL")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @staticmethod
    def _cli(node: ServerProcess, *command: str) -> str:
        """A command's reply through redis-cli (the harness leaves the driver to internal/cache)."""
        try:
            result = subprocess.run(
                [find_tool("redis-cli"), "-p", str(node.port), *command], capture_output=True, text=True, timeout=5
            )
        except subprocess.TimeoutExpired:
            return ""
        return result.stdout if result.returncode == 0 else ""

    def _info(self, node: ServerProcess, section: str) -> dict[str, str]:
        text = self._cli(node, "CLUSTER", "INFO") if section == "cluster" else self._cli(node, "INFO", section)
        return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)

    def _state_ok(self, node: ServerProcess) -> bool:
        return self._info(node, "cluster").get("cluster_state") == "ok"

    def _in_sync(self, node: ServerProcess) -> bool:
        replication = self._info(node, "replication")
        return replication.get("role") == "master" or replication.get("master_link_status") == "up"

    def _role(self, node: ServerProcess) -> str:
        return self._info(node, "replication").get("role", "")


def redis_cluster(directory: Path, *, masters: int = 3, replicas: int = 1) -> RedisClusterProcesses:
    """A cluster of `masters` masters with `replicas` replicas each (not started)."""
    return RedisClusterProcesses(directory, masters=masters, replicas=replicas)
