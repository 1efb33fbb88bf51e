"""Joining a Ray cluster: the address must answer, and a cluster that requires a token is joined with the token at
hand, all checked before anything is written; a local Ray's token file is made private; the job's workers exit
quietly (`worker_setup`).

Ray (2.52+) authenticates with a shared token when RAY_AUTH_MODE=token. A driver given an explicit address does not
turn token mode on by itself, even with a token at hand: it retries for about 20 s, then raises. Here the driver asks
the head's GCS first, in a short subprocess (Ray fixes its auth mode per process), and sets RAY_AUTH_MODE=token for
itself when the head wants a token and one is available.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from cldst.cli import fail


def check_address(option: str | None) -> None:
    """A cluster address (--address, else $RAY_ADDRESS) must be host:port (or ray://host:port) and answer there;
    Ray itself would retry an unreachable address for minutes."""
    address = option or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return
    source = "--address" if option else "RAY_ADDRESS"
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [IPv6]:port
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        fail(f"{source}: {address!r} is not host:port (the head's GCS address, e.g. 10.0.0.5:6379), "
             f"ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        fail(f"{source}: cannot reach {address} ({err.strerror or err}); is the Ray head running there?")
    if not address.startswith("ray://"):  # Ray Client answers on another protocol; it checks the token itself
        check_token(address, source)


PROBE_SECONDS = 15
TOKEN_HELP = ("put the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token (on the head: ray get-auth-token); "
              "see docs/guides/cluster.md, \"Security\"")


def token_source() -> str | None:
    """Where Ray would read an auth token from, in its own order (RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token), or None if there is none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    return str(path) if path.is_file() and path.read_text().strip() else None


def check_token(address: str, source: str) -> None:
    """Join a cluster that requires a token with the token at hand, without further settings: if the GCS refuses
    a driver without one and a token is available, set RAY_AUTH_MODE=token for this driver. No token, or one the
    cluster refuses: one line, exit 2. Each probe is a short subprocess (Ray keeps its auth mode per process),
    bounded in time."""
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    token = token_source()
    if mode == "token" and not token:  # Ray itself would abort on the first call
        fail(f"{source}: RAY_AUTH_MODE=token, but no token is set here; " + TOKEN_HELP)
    if mode == "token":
        answer = _probe_gcs(address, "token")
    else:
        answer = _probe_gcs(address, "disabled")
        if answer == "refused" and token and mode != "disabled":
            answer = _probe_gcs(address, "token")
            if answer == "ok":
                os.environ["RAY_AUTH_MODE"] = "token"
                from ray._raylet import Config

                Config.initialize("")  # Ray caches its settings per process; make this driver read the new mode
                return
    if answer == "ok":
        return
    if answer == "timeout":
        fail(f"{source}: {address} does not answer as a Ray head (GCS) within {PROBE_SECONDS} s; is that the "
             f"head's GCS port (6379 by default)?")
    if mode == "disabled":
        fail(f"{source}: the cluster at {address} requires a token, and RAY_AUTH_MODE=disabled here; unset it and "
             + TOKEN_HELP)
    if token:
        fail(f"{source}: the cluster at {address} refuses the token from {token}; " + TOKEN_HELP)
    fail(f"{source}: the cluster at {address} requires a token and none is set here; " + TOKEN_HELP)


_PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1])
except AuthenticationError:
    sys.exit(3)
"""


def _probe_gcs(address: str, mode: str) -> str:
    """'refused' (the GCS wants a token this driver lacks), 'timeout', or 'ok' (anything else: Ray's own
    start-up reports it), as a driver in auth `mode` sees it."""
    env = {**os.environ, "RAY_AUTH_MODE": mode}
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, address], env=env, capture_output=True,
                               timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "refused" if probe.returncode == 3 else "ok"


def protect_token_file() -> None:
    """Ray (2.59+) creates ~/.ray/auth_token for a local Ray with the default umask, often readable by every
    user of the machine; the token lets anyone who can reach the ports run code, so only its owner may read it."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if path.is_file() and path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


def exit_quietly_on_sigterm() -> None:
    """Ray's worker setup hook (runs in every worker of the sweep's job, before it takes work).

    Ray's workers turn SIGTERM into SystemExit(1) in their main thread, wherever it is. When Tune stops an actor
    while that thread runs a garbage-collection callback, Python cannot raise there: it prints "Exception ignored
    in ... SystemExit: 1" (the driver shows a worker's stderr) and the worker, asked to end, goes on until Ray
    kills it. Here such an exit ends the worker at once, with its code, as Ray asked, and prints nothing; any
    other exception Python cannot raise is printed as before.
    """
    default = sys.unraisablehook

    def end_on_lost_exit(unraisable: object) -> None:
        if isinstance(unraisable.exc_value, SystemExit):
            sys.stdout.flush()
            sys.stderr.flush()
            code = unraisable.exc_value.code
            os._exit(code if isinstance(code, int) else 1)
        default(unraisable)

    sys.unraisablehook = end_on_lost_exit


def worker_setup() -> dict:
    """The runtime_env entry that installs exit_quietly_on_sigterm in the job's workers. The hook travels by value:
    remote workers cannot import `sweeps` (only cldst ships with the job)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return {"worker_process_setup_hook": exit_quietly_on_sigterm}
