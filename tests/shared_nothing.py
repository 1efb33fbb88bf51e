"""A Ray cluster that shares nothing but the network and an object store, on one machine, for tests.

A cloud cluster's nodes share no filesystem: Ray Tune's storage is an object store (s3://, gs://). Here each
worker node runs in a mount namespace of its own (`unshare --mount`, as root): the root filesystem read-only,
and a private tmpfs on /tmp (Ray's session folder, the trials' working folders) and on /dev/shm (the object
store's memory), its `ray start` working in /tmp/node. Whatever a trial writes stays on its node, and the
driver's results folder (under the root namespace's /tmp) is out of the node's sight. A checkout (or its venv) that
lives under /tmp is shown again inside, read-only, at its own path: the node runs its `ray`. The only storage they
share is moto's S3 server (`S3Server`) on loopback; the head (the driver's node, no CPUs: it runs no trial)
and the nodes reach each other over Ray's TCP ports, as on a cloud.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs
import pytest
from ray_cluster import FAST_NODE_DEATH, LocalCluster, free_port

REPO = Path(__file__).resolve().parents[1]
MOTO_BIN = str(Path(sys.executable).parent / "moto_server")


def kept_folders(private: Path = Path("/tmp")) -> list[Path]:
    """The folders a node needs that lie under `private` (its tmpfs would hide them): the checkout, the venv
    (sys.prefix, and its real path if that is a link) and the Python the venv was made from; none nested in
    another."""
    needed = {REPO, Path(sys.prefix).absolute(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    under = sorted(path for path in needed if path.is_relative_to(private))
    return [path for path in under if not any(path != other and path.is_relative_to(other) for other in under)]


def isolate(kept: list[Path]) -> str:
    """The shell script a node runs as `sh -c SCRIPT node <command...>` in a new mount namespace: the root
    read-only, a private tmpfs on /dev/shm and /tmp, then the `kept` folders (under /tmp) shown again, read-only,
    then exec the command in /tmp/node. Each kept folder is bound to a spot on the new /dev/shm before /tmp is
    hidden, and moved back to its own path on the new /tmp after."""
    steps = ["mount -o remount,bind,ro /", "mount -t tmpfs tmpfs /dev/shm"]
    steps += [f"mkdir /dev/shm/kept{i} && mount -n --bind {shlex.quote(str(path))} /dev/shm/kept{i}"
              for i, path in enumerate(kept)]
    steps.append("mount -t tmpfs tmpfs /tmp")
    steps += [f"mkdir -p {shlex.quote(str(path))} && mount -n --move /dev/shm/kept{i} {shlex.quote(str(path))} "
              f"&& mount -n -o remount,bind,ro {shlex.quote(str(path))} && rmdir /dev/shm/kept{i}"
              for i, path in enumerate(kept)]
    return " && ".join([*steps, 'mkdir /tmp/node && cd /tmp/node && exec "$@"'])


LAUNCHER = ("unshare", "--mount", "--propagation", "private", "sh", "-c", isolate(kept_folders()), "node")


def namespaces_unavailable() -> str | None:
    """Why this machine cannot run isolated nodes (not root, no mount namespaces), or None if it can."""
    try:
        probe = subprocess.run([*LAUNCHER, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare failed: {err}"
    return None if probe.returncode == 0 else f"cannot make a private mount namespace: {probe.stderr.strip()}"


class S3Server:
    """moto's S3 server on a free loopback port, with one bucket. `env`: what a node or a driver needs to use it
    (pyarrow, hence Ray Tune, reads AWS_ENDPOINT_URL)."""

    def __init__(self, log_dir: Path, bucket: str = "cldst") -> None:
        self.log_dir = Path(log_dir)
        self.bucket = bucket
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}  # no probe of a cloud's metadata service
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> S3Server:
        port = self.endpoint.rsplit(":", 1)[1]
        with open(self.log_dir / "moto.log", "w") as log:
            self.process = subprocess.Popen([MOTO_BIN, "-H", "127.0.0.1", "-p", port], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start; see {self.log_dir}/moto.log")
                time.sleep(0.2)
        self.filesystem(allow_bucket_creation=True).create_dir(self.bucket)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{path}"

    def filesystem(self, **options: object) -> pyarrow.fs.S3FileSystem:
        return pyarrow.fs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                                       endpoint_override=self.endpoint, **options)

    def files(self, path: str) -> list[str]:
        """Every object under `path` in the bucket, relative to it."""
        folder = f"{self.bucket}/{path}".rstrip("/")
        selector = pyarrow.fs.FileSelector(folder, recursive=True, allow_not_found=True)
        infos = self.filesystem().get_file_info(selector)
        return sorted(info.path[len(folder) + 1:] for info in infos if info.type == pyarrow.fs.FileType.File)

    def read(self, path: str) -> str:
        with self.filesystem().open_input_stream(f"{self.bucket}/{path}") as stream:
            return stream.read().decode()


class SharedNothingCluster(LocalCluster):
    """A head with no CPUs in this machine's namespaces, and worker nodes each in a mount namespace of its own;
    the nodes and the drivers get `s3`'s environment."""

    def __init__(self, log_dir: Path, s3: S3Server) -> None:
        super().__init__(log_dir, **FAST_NODE_DEATH, **s3.env)

    def __enter__(self) -> SharedNothingCluster:
        super().__enter__()
        self.start_head(num_cpus=0)
        self.wait_for_nodes(1)
        return self

    def add_node(self, num_cpus: int = 1, launcher: tuple[str, ...] = LAUNCHER) -> subprocess.Popen:
        """A worker node in a namespace of its own, offering one unit of a resource named after it (`pin`)."""
        return super().add_node(num_cpus, launcher, resources={f"node{len(self.nodes)}": 1})

    def pin(self, node: subprocess.Popen) -> str:
        """The custom resource only `node` offers: a trial that asks for it runs there and nowhere else."""
        return f"node{self.nodes.index(node)}"
