"""``sami-rt serve``: the HTTP service of ``sami_rt.scale.serve`` on a local Ray instance or an existing cluster."""

from __future__ import annotations

import logging
import re
import signal
import time
from pathlib import Path

import click

from sami_rt.backends import DEVICES
from sami_rt.backends.precision import PRECISIONS
from sami_rt.cli.shared import friendly, ticking
from sami_rt.contract.bundle import DEFAULT_MODEL
from sami_rt.errors import BackendError
from sami_rt.scale.ray_util import connect, quiet_ray_core

GPU_DEVICES = ("cuda", "tensorrt")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _wait() -> None:
    """Until Ctrl-C or SIGTERM (KeyboardInterrupt)."""
    while True:
        time.sleep(3600)


def deploy_failure(error: Exception) -> str:
    """One line for a deployment that failed (Ray's message holds the replica's traceback): the exception it
    ends with where there is one (``sami_rt.errors.BundleError: ...``), else its first line."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception)(\(\w+\))?: ", ln)]
    return raised[-1] if raised else (lines or [type(error).__name__])[0]


@click.command("serve")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Model bundle directory (on a cluster: a path every node holds), or the name of a model shipped "
              f"in the package (default: {DEFAULT_MODEL.name}).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Where each replica runs its model (cuda, tensorrt: each replica reserves one GPU; the cluster "
              "must have one per replica; openvino: OpenVINO on the CPU, pip install \"sami-rt[openvino]\").")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
              help="bf16: bfloat16 with --device openvino where the CPU has AMX-BF16 or AVX512-BF16 (elsewhere a "
              "note and float32); auto: float32 on the CPU, float16 on a GPU where the model has it.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; the service has no authentication).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Copies of the model, each answering its own batches (each reserves --threads CPUs).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Backend threads per replica.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Generate requests gathered into one backend call.")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long a batch waits for more requests once its first one arrived.")
@click.option("--max-n", type=click.IntRange(min=1), default=256, show_default=True,
              help="The most samples one request may ask for.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              help="The largest request body in MiB; a larger one is refused (413) before it is read.")
@click.option("--address", default=None, metavar="ADDRESS",
              help="The Ray cluster to serve on (HOST:PORT, ray://..., or 'auto': the cluster `ray start` runs on "
              "this machine); default $RAY_ADDRESS, else a new local Ray instance for this command alone (never "
              "a running cluster unless named). On a cluster, stopping removes only this application.")
@friendly
def serve(model, device, precision, host, port, replicas, threads, max_batch_size, batch_wait_ms, max_n, max_body_mb, address):
    """Serve guided generation and encoding over HTTP (Ray Serve), batching concurrent requests.

    \b
    Endpoints:
      POST /generate  {"guide": base64 image | "z": [...], "n", "steps", "sampler", "eta",
                       "seed", "scale", "interval", "mask", "guide_mean", "format": png|npy|npz|json}
      POST /encode    {"image": base64 image} or {"images": [...]} -> posterior means and variances
      GET  /health    GET /info

    Concurrent requests that share a sampler, steps, eta and guidance (latents or none) run as one sampling
    loop. A response equals `Runtime.generate` with the same arguments bit for bit on the CPU backend with
    one thread (the default), within floating-point rounding otherwise, batched or not. Stop with Ctrl-C (or
    SIGTERM).

    \b
    Example:
      sami-rt serve --port 8000
      curl -s localhost:8000/generate -d '{"n": 4, "seed": 1, "format": "json"}'
    """
    from sami_rt.scale.ray_util import import_ray

    import_ray("sami-rt serve", serve=True)  # no Ray: one line naming the extra, before anything else
    from sami_rt.scale.serve import APP_NAME, build_app, model_argument, start

    model_argument(model)  # a model that does not exist: one line before Ray starts
    with quiet_ray_core():  # Ray's own C++ log lines (a Serve controller killed at shutdown, ...) are not the user's
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        click.echo(f"starting Ray and {replicas} replica(s)", err=True)
        with ticking("starting"):
            ray, started = connect(address, "sami-rt serve", serve=True)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its "Started Serve ..." lines: ours says it
        deployed = False
        try:
            # stopped by a service manager: the clean-up of Ctrl-C (set after ray.init, which installs its own)
            signal.signal(signal.SIGTERM, _interrupt)
            have = ray.cluster_resources()  # what the replicas reserve must exist, or Ray Serve waits forever
            if device in GPU_DEVICES and have.get("GPU", 0) < replicas:
                raise BackendError(f"--device {device} needs one GPU per replica: {replicas} wanted, the Ray "
                                   f"cluster has {have.get('GPU', 0):g}")
            if started and have.get("CPU", 0) < replicas * threads:  # a cluster may add nodes; this instance won't
                raise BackendError(f"{replicas} replica(s) of {threads} thread(s) need {replicas * threads} CPUs; this "
                                   f"machine's Ray instance has {have.get('CPU', 0):g} (use fewer --replicas or --threads)")
            app = build_app(model, device, threads, replicas, max_batch_size, batch_wait_ms / 1000.0, max_n,
                            int(max_body_mb * 2**20), precision)
            deployed = True
            try:
                with ticking("starting the replicas"):
                    url = start(app, host, port)
            except RuntimeError as e:  # a replica that cannot start: Ray's message carries its traceback
                raise BackendError(f"sami-rt serve: the replicas did not start ({deploy_failure(e)})") from None
            click.echo(f"serving {model or DEFAULT_MODEL.name} on {url} ({replicas} replica(s), {threads} thread(s) "
                       f"each, batches of up to {max_batch_size} requests); Ctrl-C stops", err=True)
            _wait()
        except KeyboardInterrupt:
            click.echo("stopping", err=True)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            try:
                if started:  # our own Ray instance: Serve goes with it (serve.shutdown first would kill its
                    ray.shutdown()  # controller mid-way and make Ray print a "graceful_shutdown failed" line)
                elif deployed:  # a shared cluster: only this application goes; Serve and the cluster stay
                    ray.serve.delete(APP_NAME)
            finally:
                for s, h in handlers.items():
                    signal.signal(s, h)
