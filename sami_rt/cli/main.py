"""The ``sami-rt`` command line: parse, call sami_rt.Runtime, write files, print a short summary. The shared
options and helpers are in ``sami_rt.cli.shared``, ``sami-rt bench`` in ``sami_rt.cli.bench``."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from sami_rt.cli.bench import bench
from sami_rt.cli.corpus import encode_corpus
from sami_rt.cli.encode import encode
from sami_rt.cli.info import info
from sami_rt.cli.serve import serve
from sami_rt.cli.shared import (check_grid_fits, friendly, grid_outputs, image_input, interval_levels, model_options,
                                open_runtime, run_with_progress, sampling_options, sampling_title, write_grid,
                                write_latents, zoom_option)
from sami_rt.errors import InputError

GRID_HELP = ("in the format its extension names (.png, .jpg, .bmp, .webp, .tif); the latents go to the same name "
             "with .npz")


def interpolation_labels(n: int) -> list[str]:
    """interpolate's captions: each tile's weight t, the endpoints also A and B."""
    t = np.linspace(0.0, 1.0, n)
    return ["A t=0"] + [f"t={v:.2f}" for v in t[1:-1]] + ["B t=1"]


def traversal_labels(axis: int, values, unit: str) -> list[str]:
    """traverse's captions: each tile's offset and unit, or with unit 'value' the coordinate it was set to."""
    return [f"z{axis}={v:g}" if unit == "value" else f"{v:+g} {unit}" for v in values]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sami-rt")
def main():
    """Guided generation and encoding with SAMI models (score-based autoencoders).

    \b
    Examples:
      sami-rt generate --guide examples/guide.png -n 16 -o samples.png
      sami-rt encode examples/moving_disk.mp4 --plot trajectory.png
      sami-rt info
      sami-rt serve --port 8000        # HTTP service (pip install "sami-rt[ray]")
    """


@main.command()
@click.option("--guide", type=click.Path(path_type=Path), help="Guide image: samples share its latent attributes.")
@click.option("-n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Number of samples.")
@click.option("--axes", "axes", default=None,
              help="Guide only these latent dimensions, e.g. 0,2 (the others are left free).")
@click.option("--guide-mean", is_flag=True, help="Use the guide's posterior mean instead of a sample per output.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("samples.png"), show_default=True,
              help=f"Image grid to write, {GRID_HELP}; a guide's tile comes first, framed and captioned.")
@zoom_option
@sampling_options
@model_options
@friendly
def generate(guide, n, axes, guide_mean, out, zoom, steps, sampler, eta, seed, interval, scale, batch, model, device,
             threads):
    """Draw samples, guided by an image's latent or unconditional.

    \b
    Examples:
      sami-rt generate --guide examples/guide.png -n 16 -o samples.png
      sami-rt generate --guide examples/guide.png --axes 0,1 --steps 100
      sami-rt generate -n 64 --sampler ddim            # unconditional (no guide)
      sami-rt generate --guide examples/guide.png --sampler dpmpp-2m   # 20 steps
    """
    npz = grid_outputs(out)
    image_input(guide, "--guide")
    mask = None
    if axes:
        try:
            mask = [int(a) for a in axes.replace(" ", "").split(",") if a]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated dimensions, got {axes!r}", param_hint="--axes")
    rt = open_runtime(model, device, threads)
    if guide:
        what = f"{n} samples guided by {guide.name}" + (f" on axes {','.join(map(str, mask))}" if mask else "")
    else:
        what = f"{n} unconditional samples"
    title = sampling_title(rt, what, sampler, steps, scale, guided=bool(guide), interval=interval)
    check_grid_fits(out, rt, n, zoom=zoom, title=title, lead="guide" if guide else None)
    s = run_with_progress("sampling", rt.generate, guide=str(guide) if guide else None, n=n, steps=steps,
                          sampler=sampler, eta=eta, seed=seed, scale=scale, mask=mask, guide_mean=guide_mean,
                          batch=batch, interval=interval)
    for note in s.notes:
        click.echo(f"note: {note}", err=True)
    write_grid(out, s, s.guide, zoom=zoom, title=title)  # the guide as the runtime loaded it, once
    write_latents(npz, s)
    first = " (the framed first tile: the guide)" if guide else ""
    levels = interval_levels(rt, interval)
    guided = "" if s.scale is None else f" at guidance scale {s.scale:g}" + (f" at noise {levels}" if levels else "")
    click.echo(f"{n} samples, {s.steps} {sampler} steps{guided}, {s.seconds:.2f} s -> {out}{first}, latents -> {npz}")


@main.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("-n", "n", type=click.IntRange(min=2), default=8, show_default=True, help="Points on the line.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("interpolation.png"), show_default=True,
              help=f"Image grid to write, {GRID_HELP} (with the weights t: z = (1 - t) mu_a + t mu_b).")
@zoom_option
@sampling_options
@model_options
@friendly
def interpolate(a, b, n, out, zoom, steps, sampler, eta, seed, interval, scale, batch, model, device, threads):
    """Decode n points on the line between two images' posterior means.

    \b
    Example:
      sami-rt interpolate left.png right.png -n 8 -o line.png
    """
    npz = grid_outputs(out)
    image_input(a)
    image_input(b)
    rt = open_runtime(model, device, threads)
    title = sampling_title(rt, f"A = {a.name}, B = {b.name}, z = (1 - t) mu_A + t mu_B", sampler, steps, scale,
                           interval=interval)
    check_grid_fits(out, rt, n, ncol=n, zoom=zoom, labels=interpolation_labels(n), title=title)
    s = rt.interpolate(str(a), str(b), n, steps=steps, sampler=sampler, eta=eta, seed=seed, scale=scale, batch=batch,
                       interval=interval)
    write_grid(out, s, ncol=n, zoom=zoom, labels=interpolation_labels(n), title=title)
    write_latents(npz, s, t=np.linspace(0.0, 1.0, n, dtype=np.float32))
    click.echo(f"{n} images -> {out}, latents -> {npz}")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--axis", type=int, required=True, help="Latent dimension to move.")
@click.option("--values", default="-2,-1,0,1,2", show_default=True,
              help="Comma-separated offsets from the image's posterior mean, in --unit.")
@click.option("--unit", type=click.Choice(["spread", "sd", "value"]), default=None,
              help="spread: the code's spread on the axis (std of held-out posterior means, recorded in the bundle; "
              "the default where it is); sd: the image's posterior standard deviation (the default otherwise); "
              "value: --values are the coordinates themselves.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("traversal.png"), show_default=True,
              help=f"Image grid to write, {GRID_HELP} (with the axis, the values and the unit).")
@zoom_option
@sampling_options
@model_options
@friendly
def traverse(image, axis, values, unit, out, zoom, steps, sampler, eta, seed, interval, scale, batch, model, device,
             threads):
    """Decode an image's latent with one dimension moved by offsets (in the code's spread by default).

    \b
    Examples:
      sami-rt traverse examples/guide.png --axis 0 --values=-2,-1,0,1,2
      sami-rt traverse examples/guide.png --axis 0 --values=-3,0,3 --unit sd
      sami-rt traverse examples/guide.png --axis 0 --values=-7,0,10 --unit value
    """
    try:
        vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {values!r}", param_hint="--values")
    npz = grid_outputs(out)
    image_input(image)
    rt = open_runtime(model, device, threads)
    unit = rt.traverse_unit(unit)
    if not 0 <= axis < rt.latent_dim:  # before the unit's size is looked up
        raise InputError(f"--axis must be in 0..{rt.latent_dim - 1}, got {axis}")
    x = rt.load_images(str(image))
    if unit == "value":
        moved = "set to the values below"
    else:
        _, var = rt.encode(x)
        size = float(rt.axis_scale(unit, var[:1])[axis])
        moved = f"moved from the posterior mean by 1 {unit} = {size:.3g}"
        if unit == "sd" and max(abs(v) for v in vals) <= 3:
            click.echo(f"note: offsets of at most 3 posterior sds ({3 * size:.3g} on z{axis}) stay inside what "
                       f"{image.name} itself pins down, so the tiles may look alike; for visible changes give "
                       "larger --values or --unit value", err=True)
    title = sampling_title(rt, f"{image.name}, axis z{axis} {moved}", sampler, steps, scale, interval=interval)
    labels = traversal_labels(axis, vals, unit)
    check_grid_fits(out, rt, len(vals), ncol=len(vals), zoom=zoom, labels=labels, title=title, lead="image")
    s = rt.traverse(x, axis, vals, unit=unit, steps=steps, sampler=sampler, eta=eta, seed=seed, scale=scale,
                    batch=batch, interval=interval)
    write_grid(out, s, x, ncol=len(vals), zoom=zoom, labels=labels, title=title, lead="image")
    write_latents(npz, s, axis=axis, values=np.asarray(vals), unit=unit)
    how = f"set to {values}" if unit == "value" else f"moved by {values} {unit}s"
    click.echo(f"{len(vals)} images (axis {axis} {how}) -> {out}, latents -> {npz}")


@main.command()
@click.argument("images", type=click.Path(path_type=Path))
@model_options
@friendly
def axes(images, model, device, threads):
    """Rank latent dimensions by posterior variance over an image or a folder (small = rigid, informative),
    with the scale a traversal moves in: the code's spread per axis (std of held-out posterior means,
    recorded in the bundle) and the posterior sd in spreads.

    \b
    Example:
      sami-rt axes examples/
    """
    image_input(images, folder=True)
    rt = open_runtime(model, device, threads)
    rows = rt.axes_table(str(images))  # before the header: an error comes alone
    click.echo(f"{'dim':>4}{'posterior var':>15}{'posterior sd':>14}{'mean':>10}{'spread':>10}{'sd/spread':>11}")
    for r in rows:
        sp = "-" if r["spread"] is None else f"{r['spread']:.3g}"
        ratio = "-" if r["sd_in_spreads"] is None else f"{r['sd_in_spreads']:.3g}"
        click.echo(f"{r['dim']:>4}{r['var']:>15.4g}{r['sd']:>14.4g}{r['mean']:>10.3g}{sp:>10}{ratio:>11}")


for _cmd in (encode, encode_corpus, info, bench, serve):
    main.add_command(_cmd)


if __name__ == "__main__":
    main()
