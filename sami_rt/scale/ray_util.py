"""Ray for the commands that scale out (``encode-corpus --ray``, ``serve``): the import that names the extra,
and the one connection rule."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import threading

from sami_rt.errors import BackendError, InputError

RAY_MISSING = 'this needs Ray: pip install "sami-rt[ray]"'


def import_ray(what: str, serve: bool = False):
    """The ``ray`` module with Ray Data (or Ray Serve with ``serve``), or an InputError naming the extra."""
    try:
        import ray  # optional: the [ray] extra

        if serve:
            import ray.serve  # noqa: F401
        else:
            import ray.data  # noqa: F401
    except ImportError:
        raise InputError(f"{what} needs Ray {'Serve' if serve else 'Data'}: pip install \"sami-rt[ray]\"") from None
    return ray


def ray_address(address: str | None) -> str:
    """Where a command's Ray is: ``address`` (``--address``), else ``$RAY_ADDRESS``, else ``local``: a new
    instance on this machine for the command alone (never a cluster that ``ray start`` left running here)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def check_reachable(address: str, what: str, timeout: float = 5.0) -> None:
    """A plain HOST:PORT address that nothing answers on is a BackendError at once (``ray.init`` would retry it
    for minutes, printing Ray's own warnings); ``local``, ``auto`` and ``ray://`` addresses are left to Ray."""
    if address in ("local", "auto") or "://" in address or address.count(":") != 1:
        return
    host, port = address.rsplit(":", 1)
    if not port.isdigit():
        raise BackendError(f"{what}: Ray address {address} is not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise BackendError(f"{what}: no Ray cluster answers at {address} ({e.strerror or e})") from None


# Ray Serve gives its HTTP proxy 3 readiness checks of 5 s each, then kills it and fails serve.start. On two
# busy cores the proxy's start (its imports) took longer (issue 31's serving tests failed so with both cores
# held by training runs); a local instance started here gives it 30 s a check unless the environment says.
SERVE_ENV_DEFAULTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30"}


def serve_env_defaults() -> None:
    """Set SERVE_ENV_DEFAULTS where the environment sets nothing (before ``ray.init``: Ray's processes inherit it)."""
    for k, v in SERVE_ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)


def connect(address: str | None, what: str, serve: bool = False, **init_kw):
    """Ray, initialised: the instance this process already runs, else the one ``ray_address`` names. Returns
    (ray, started): started is True when this call started a new local instance (the caller shuts it down).
    A cluster that cannot be reached is a BackendError in one line."""
    ray = import_ray(what, serve)
    if ray.is_initialized():
        return ray, False
    where = ray_address(address)
    check_reachable(where, what)
    if serve:
        serve_env_defaults()
    try:
        ray.init(address=where, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True, **init_kw)
    except Exception as e:  # noqa: BLE001 -- Ray raises ConnectionError, ValueError, RuntimeError and others here
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BackendError(f"{what}: cannot start or reach Ray at {where} ({text})") from None
    return ray, where == "local"


# A line of Ray's own C++ logging, as its core worker writes it to this process's stderr (glog's layout with a
# timestamp, or a process tag such as "(raylet)", either maybe in colour), e.g. every Ray Data run's
#   [2026-12-04 02:52:35,571 E 15317 15317] core_worker.cc:2465: Actor with class name: 'MapWorker(...)' ...
#   (raylet) Task ServeController.graceful_shutdown failed. There are infinite retries remaining, ...
RAY_CORE_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWE] \d+ \d+\] \S+:\d+: "
                           r"|\((raylet|gcs_server|pid=\d+[^)]*)\)(\x1b\[[0-9;]*m)? )")


@contextlib.contextmanager
def quiet_ray_core():
    """While the block runs, this process's stderr (file descriptor 2, which Ray's C++ core writes to, and
    every child started meanwhile, Ray's local processes included) goes through a thread that drops the lines
    of Ray's own logging (``RAY_CORE_LINE``) and passes everything else on unchanged. Ray's notices there are
    about its own machinery; what goes wrong for the user reaches them as Ray's exceptions, which the commands
    turn into one line. Fatal lines ('F') pass."""
    try:
        saved = os.dup(2)
        r, w = os.pipe()
    except OSError:  # no stderr to filter
        yield
        return
    sys.stderr.flush()
    os.dup2(w, 2)
    os.close(w)

    def pump():
        with os.fdopen(r, "rb") as src:
            for line in src:
                if not RAY_CORE_LINE.match(line.decode("utf-8", "replace")):
                    os.write(saved, line)

    t = threading.Thread(target=pump, name="ray-stderr-filter", daemon=True)
    t.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # our write end of the pipe closes; Ray's processes, if any still run, hold theirs
        t.join(timeout=5)
        if not t.is_alive():
            os.close(saved)
