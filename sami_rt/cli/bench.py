"""``sami-rt bench``: its options and its run, shared with the command that adds a comparison baseline
(``python -m sami_reference.bench``, which passes ``baseline``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from sami_rt.cli.shared import friendly, model_options, open_runtime


def bench_options(fn):
    fn = model_options(fn)
    for opt in reversed([
        click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1, 16),
                     show_default=True, help="Batch size for the per-call figures (repeat the option for several)."),
        click.option("--repeats", type=click.IntRange(min=1), default=30, show_default=True,
                     help="Timed calls per figure (video: max(3, repeats / 10) rounds)."),
        click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed calls first."),
        click.option("-n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Samples for generate."),
        click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True,
                     help="DDIM steps for generate."),
        click.option("--frames", type=click.IntRange(min=3), default=1000, show_default=True,
                     help="Frames of the synthetic 640x480 video (300 decode in ~70 ms: too short to time steadily)."),
        click.option("--video", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                     help="Use this video instead of the synthetic one."),
        click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
                     help="Write every figure as JSON."),
    ]):
        fn = opt(fn)
    return fn


Baseline = Callable[[object, int], tuple[object | None, str | None]]


def run_bench_command(batches, repeats, warmup, n, steps, frames, video, json_out, model, device, threads,
                      baseline: Baseline | None = None, compare: bool = False, extra=None) -> None:
    """Open the runtime, run the bench, print the report and write the JSON. ``baseline(rt, threads)``:
    (an object to compare with, None) or (None, why there is none). ``compare``: every installed backend side
    by side instead (``sami_rt.cli.bench_compare``), with ``extra(rt, threads)`` -> {label: backend-like} beside."""
    import json

    from sami_rt.cli.benchmark import format_report, run_bench
    from sami_rt.media.files import atomic_write_bytes
    from sami_rt.media.outputs import check_output

    if json_out:
        check_output(json_out, "--json", "bench.json")  # before minutes of measuring
    rt = open_runtime(model, device, threads)
    if compare:
        from sami_rt.cli.bench_compare import format_compare, run_compare

        res = run_compare(rt, batches, repeats, warmup, threads, extra(rt, threads) if extra else None,
                          log=lambda s: click.echo(f"... {s}", err=True))
        click.echo(format_compare(res))
        if json_out:
            atomic_write_bytes(json_out, (json.dumps(res, indent=2) + "\n").encode())
            click.echo(f"figures -> {json_out}")
        return
    if rt.bundle.manifest.T < steps:
        raise click.BadParameter(f"the model has T={rt.bundle.manifest.T} levels", param_hint="--steps")
    ref, why = baseline(rt, threads) if baseline is not None else (None, None)
    res = run_bench(rt, batches, repeats, warmup, n, steps, frames, video, ref,
                    log=lambda s: click.echo(f"... {s}", err=True))
    if why:
        res["meta"]["baseline"] = f"none: {why}"
    click.echo(format_report(res))
    if json_out:
        atomic_write_bytes(json_out, (json.dumps(res, indent=2) + "\n").encode())
        click.echo(f"figures -> {json_out}")


@click.command()
@bench_options
@click.option("--no-baseline", is_flag=True, hidden=True)  # accepted as before: this command runs no baseline
@click.option("--compare", is_flag=True, help="Every backend installed here side by side (onnxruntime, OpenVINO "
              "f32 and, where the CPU has it, bf16): guided_eps and encoder per batch, interleaved, with ratios.")
@friendly
def bench(no_baseline, compare, **kw):
    """Measure the runtime on this machine, in this one process.

    \b
    Per-call latency of guided_eps and the encoder, a full generate (and the sampling loop's own share of
    it), video encoding throughput (decoding included and excluded), and with the bundle's FLOP counts the
    achieved rate. `python -m sami_reference.bench` takes the same options and adds the reference model
    in eager mode (denoiser forward plus autograd guidance), timed beside the runtime, with the ratios.
    \b
    Examples:
      sami-rt bench
      sami-rt bench --batch 1 --batch 16 --repeats 50 --json bench.json
      sami-rt bench --device cuda --batch 1 --batch 64
      sami-rt bench --device openvino --precision bf16 --json bench.json
      sami-rt bench --compare --batch 16 --batch 64
    """
    run_bench_command(**kw, compare=compare)
