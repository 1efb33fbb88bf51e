"""A local multi-node Ray cluster for tests: one `ray start --block` per node, on this machine.

Each node runs in its own session, so its process group holds every Ray process it starts (GCS,
raylet, workers): killing that group is a dead node, and cleaning up kills only the groups the
test started (never `ray stop`, which would end other sessions' Ray). One random auth token for
the nodes and the drivers (Ray 2.59+ authenticates local clusters).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

RAY_BIN = str(Path(sys.executable).parent / "ray")
# The GCS declares a node dead after health_check_failure_threshold failed checks, one every
# health_check_period_ms (Ray's defaults: 5 x 3 s). A killed raylet refuses the check at once, so a short
# period finds it in ~5 s; the timeout stays Ray's 10 s so that a slow raylet on a busy machine is not
# declared dead by mistake. Read by the GCS at start.
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def driver_env(**extra: str) -> dict:
    """This process's environment for a driver subprocess, without a RAY_ADDRESS inherited from elsewhere."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class LocalCluster:
    """`with LocalCluster(log_dir) as cluster:` a head, then `cluster.add_node(...)` per worker node."""

    def __init__(self, log_dir: Path, **env: str) -> None:
        self.log_dir = Path(log_dir)
        self.address = f"127.0.0.1:{free_port()}"
        self.env = driver_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), **env)
        self.nodes: list[subprocess.Popen] = []  # each the leader of its node's process group
        self.temp_dir = ""

    def __enter__(self) -> LocalCluster:
        self.temp_dir = tempfile.mkdtemp(prefix="cldst-ray-")  # short: Ray's socket paths must fit in 107 bytes
        return self

    def __exit__(self, *exc: object) -> None:
        for node in reversed(self.nodes):
            self.kill(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def start_head(self, num_cpus: int = 1) -> subprocess.Popen:
        return self._start(f"--num-cpus={num_cpus}", "--head", f"--port={self.address.split(':')[1]}",
                           "--include-dashboard=false", f"--temp-dir={self.temp_dir}")

    def add_node(self, num_cpus: int = 1, launcher: tuple[str, ...] = (), resources: dict | None = None
                 ) -> subprocess.Popen:
        """A worker node; `launcher`: a command that runs the node's command given after it (in a namespace of its
        own, tests/shared_nothing.py); `resources`: custom resources it offers, e.g. {"node2": 1}."""
        custom = (f"--resources={json.dumps(resources)}",) if resources else ()
        return self._start(f"--num-cpus={num_cpus}", f"--address={self.address}", *custom, launcher=launcher)

    def _start(self, *options: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
        log = open(self.log_dir / f"node{len(self.nodes)}.log", "w")  # the node outlives this call
        node = subprocess.Popen([*launcher, RAY_BIN, "start", "--block", *options], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()  # the child holds its own copy
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> int:
        status = subprocess.run([RAY_BIN, "status", f"--address={self.address}"], env=self.env,
                                capture_output=True, text=True, timeout=60)
        active = status.stdout.split("Pending:")[0]  # active nodes come first, then pending and failed ones
        return len(re.findall(r"^\s*1 node_", active, flags=re.M))

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() == count:
                return
            for node in self.nodes:
                if node.poll() is not None and node.returncode != -signal.SIGKILL:
                    pytest.fail(f"`ray start` exited with {node.returncode}; see {self.log_dir}/node*.log")
            time.sleep(1)
        pytest.fail(f"the local cluster did not reach {count} live nodes in {timeout:.0f}s")

    def node_id(self, node: subprocess.Popen) -> str:
        """The Ray node id of a node this cluster started: its raylet's --node_id, found among the group's processes."""
        for pid in group_pids(node.pid):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in args:
                if arg.startswith(b"--node_id="):
                    return arg.split(b"=", 1)[1].decode()
        raise LookupError(f"no raylet in the process group of node {node.pid}")

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL the node's whole process group (raylet, its workers, and the GCS on the head)."""
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait(timeout=30)


def group_pids(pgid: int) -> list[int]:
    """Processes of process group `pgid` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids
