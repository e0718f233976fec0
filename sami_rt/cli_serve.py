"""``sami-rt serve``: the HTTP service of ``sami_rt.serve`` on a local Ray instance or an existing cluster."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click

from sami_rt.backends import DEVICES
from sami_rt.cli_shared import friendly

RAY_MISSING = 'sami-rt serve needs Ray Serve, which is not installed: pip install "sami-rt[ray]"'


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command("serve")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Model bundle directory (on a cluster: a path every node holds), or the name of a model shipped "
              "in the package (default: disks-small).")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True,
              help="Where each replica runs its model (cuda, tensorrt: each replica reserves one GPU).")
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
@click.option("--address", default=None, metavar="ADDRESS",
              help="An existing Ray cluster to join ('auto': the cluster this machine is a node of); default: a "
              "local Ray instance started for this command. Ctrl-C then removes only this application.")
@friendly
def serve(model, device, host, port, replicas, threads, max_batch_size, batch_wait_ms, max_n, address):
    """Serve guided generation and encoding over HTTP (Ray Serve), batching concurrent requests.

    \b
    Endpoints:
      POST /generate  {"guide": base64 image | "z": [...], "n", "steps", "sampler", "seed",
                       "scale", "mask", "guide_mean", "format": png|npy|npz|json}
      POST /encode    {"image": base64 image} or {"images": [...]} -> posterior means and variances
      GET  /health    GET /info

    Every response equals `Runtime.generate` with the same arguments, batched or not. Stop with Ctrl-C (or
    SIGTERM).

    \b
    Example:
      sami-rt serve --port 8000
      curl -s localhost:8000/generate -d '{"n": 4, "seed": 1, "format": "json"}'
    """
    try:
        import ray
        from ray import serve as ray_serve  # noqa: F401
    except ImportError:
        raise click.ClickException(RAY_MISSING) from None
    from sami_rt.serve import build_app, model_argument, start

    model_argument(model)  # a model that does not exist: one line before Ray starts
    ours = not ray.is_initialized()
    if ours:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    # stopped by a service manager: the clean-up of Ctrl-C (set after ray.init, which installs its own handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app = build_app(model, device, threads, replicas, max_batch_size, batch_wait_ms / 1000.0, max_n)
        url = start(app, host, port)
        click.echo(f"serving {model or 'disks-small'} on {url} ({replicas} replica(s), {threads} thread(s) each, "
                   f"batches of up to {max_batch_size} requests); Ctrl-C stops", err=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
    finally:
        from ray import serve as ray_serve

        from sami_rt.serve import APP_NAME

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if address is None:  # our own Ray instance: Serve goes with it
            ray_serve.shutdown()
        else:  # a shared cluster: only this application goes; Serve and the cluster stay
            ray_serve.delete(APP_NAME)
        if ours:
            ray.shutdown()
