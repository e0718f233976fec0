"""``sami-rt encode-corpus``: videos and folders of images (or list files naming them) into one .npz each and
an index, resumable, in this process or a pool of processes (``sami_rt.scale.corpus``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sami_rt.backends import DEVICES
from sami_rt.cli.shared import friendly, ticking
from sami_rt.contract.bundle import DEFAULT_MODEL
from sami_rt.errors import InputError


def item_line(k: int, n: int, row: dict) -> str:
    """One finished item: '[k/n] path: frames, curvatures, seconds', 'skipped (complete: ...)' or 'failed: why'."""
    head = f"[{k}/{n}] {row['path']}: "
    if row["status"] == "failed":
        return head + f"failed: {row['error']}"

    def deg(x):
        return "undefined" if x is None else f"{x:.1f} deg"

    what = (f"{row['frames']} frames, curvature latent {deg(row['latent_curvature'])}, "
            f"pixel {deg(row['pixel_curvature'])}")
    return head + (f"skipped (complete: {what})" if row["status"] == "skipped" else f"{what}, {row['seconds']:.2f} s")


def summary(rows: list[dict], index: Path, seconds: float) -> str:
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    frames = sum(r["frames"] or 0 for r in rows if r["status"] == "ok")
    return (f"{len(rows)} inputs: {count['ok']} encoded ({frames} frames, {seconds:.1f} s), {count['skipped']} "
            f"skipped (complete), {count['failed']} failed; index -> {index}")


@click.command("encode-corpus")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Directory for the outputs: one .npz per input (named after its path, plus a short hash of the "
              "absolute path) and index.jsonl, one row per input.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes, each loading the model once (default: the CPUs, at most the inputs to encode); 1 "
              "encodes in this process. Each runs the backend on one thread.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Videos: every n-th frame.")
@click.option("--bgr-frames", is_flag=True,
              help="Videos: decode every frame to BGR and convert it as an image is converted (see `sami-rt "
              "encode --help`).")
@click.option("--ray", "ray", is_flag=True,
              help="Run on Ray through Ray Data (pip install \"sami-rt[ray]\"): the cluster at --address, else "
              "$RAY_ADDRESS, else a new Ray instance on this machine for this command. --workers actors (default: "
              "the cluster's CPUs), each loading the model once; inputs and OUT must be paths every node can "
              "reach. --device auto means the CPU on Ray; cuda and tensorrt reserve a GPU per actor.")
@click.option("--address", default=None, metavar="ADDRESS",
              help="With --ray: the Ray cluster to use (e.g. ray://head:10001, or auto for the one running here).")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Model bundle directory, or the name of a model shipped in the package (default: "
              f"{DEFAULT_MODEL.name}).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where to run: auto picks TensorRT, then CUDA, then CPU.")
@friendly
def encode_corpus(inputs, out_dir, workers, every, bgr_frames, ray, address, model, device):
    """Encode many videos and folders of images: one .npz per input, as `sami-rt encode VIDEO` writes it.

    INPUTS are videos, folders of images (their images, sorted by name, are the frames of one input) and .txt
    files listing such paths (one a line, '#' starting a comment line, relative to the list's folder). Each
    output holds frames, mu, var, the latent and pixel curvature and straightness, the input's path and a
    format tag.

    OUT/index.jsonl has one row per input, in input order: path, output, kind, frames, mean curvatures,
    straightness, status (ok, skipped, failed), error and seconds. It is rewritten as inputs finish, so an
    interrupted run leaves the index of what it did.

    A rerun skips an input whose output is complete and still matches it (its path, size and modification
    time, the model and the options) and encodes the rest. An input that cannot be read (missing, truncated,
    not a video) is a failed row and the others go on; the exit code is then 1.

    \b
    Examples:
      sami-rt encode-corpus videos/*.mp4 frames/ -o codes/
      sami-rt encode-corpus list.txt -o codes/ --workers 4
      sami-rt encode-corpus list.txt -o /shared/codes/ --ray --address ray://head:10001
    """
    import time

    from sami_rt.hardware.cpus import usable_cpus
    from sami_rt.scale.corpus import INDEX, check_out_dir, expand_inputs, make_items, model_id, run_corpus

    if address is not None and not ray:
        raise InputError("--address names a Ray cluster; add --ray to run there")
    if ray:
        from sami_rt.scale.ray_util import check_reachable, import_ray, ray_address

        import_ray("--ray")  # the extra's absence, and a cluster nothing answers at, are one line before any work
        check_reachable(ray_address(address), "--ray")
    check_out_dir(out_dir)
    paths, dropped = expand_inputs(inputs)
    if not paths:
        raise InputError("no inputs: the list files name no paths")
    items = make_items(paths, every, not bgr_frames, model_id(model))
    if not ray:
        workers = workers or usable_cpus()
    where = f"up to {workers} worker(s)" if workers else "one Ray actor per CPU of the cluster"
    click.echo(f"{len(items)} inputs -> {out_dir}, {where}" + (" on Ray" if ray and workers else "")
               + (f" ({dropped} repeated path(s) taken once)" if dropped else ""), err=True)

    def progress(k, n, row):
        click.echo(item_line(k, n, row), err=True)
        tick.touch()

    t0 = time.perf_counter()
    try:
        with ticking("encoding" + (" (Ray starting, then the first input)" if ray else "")) as tick:
            rows = run_corpus(items, out_dir, workers, model, device, progress, ray=ray, address=address)
    except KeyboardInterrupt:
        click.echo(f"interrupted; the index of what was done -> {out_dir / INDEX}", err=True)
        sys.exit(130)
    click.echo(summary(rows, out_dir / INDEX, time.perf_counter() - t0), err=True)
    if any(r["status"] == "failed" for r in rows):
        sys.exit(1)
