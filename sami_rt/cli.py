"""The ``sami-rt`` command line: parse, call sami_rt.Runtime, write files, print a short summary. The shared
options and helpers are in ``sami_rt.cli_shared``, ``sami-rt bench`` in ``sami_rt.cli_bench``."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from sami_rt.cli_bench import bench
from sami_rt.cli_shared import friendly, model_options, open_runtime, run_with_progress, sampling_options, write_grid

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sami-rt")
def main():
    """Guided generation and encoding with SAMI models (score-based autoencoders).

    \b
    Examples:
      sami-rt generate --guide examples/guide.png -n 16 -o samples.png
      sami-rt encode examples/moving_disk.mp4 --plot trajectory.png
      sami-rt info
    """


@main.command()
@click.option("--guide", type=click.Path(path_type=Path), help="Guide image: samples share its latent attributes.")
@click.option("-n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Number of samples.")
@click.option("--axes", "axes", default=None,
              help="Guide only these latent dimensions, e.g. 0,2 (the others are left free).")
@click.option("--guide-mean", is_flag=True, help="Use the guide's posterior mean instead of a sample per output.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("samples.png"), show_default=True,
              help="PNG grid to write (the latents go to the same name with .npz).")
@sampling_options
@model_options
@friendly
def generate(guide, n, axes, guide_mean, out, steps, sampler, eta, seed, scale, batch, model, device, threads):
    """Draw samples, guided by an image's latent or unconditional.

    \b
    Examples:
      sami-rt generate --guide examples/guide.png -n 16 -o samples.png
      sami-rt generate --guide examples/guide.png --axes 0,1 --steps 100
      sami-rt generate -n 64 --sampler ddim            # unconditional (no guide)
    """
    rt = open_runtime(model, device, threads)
    mask = None
    if axes:
        try:
            mask = [int(a) for a in axes.replace(" ", "").split(",") if a]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated dimensions, got {axes!r}", param_hint="--axes")
    s = run_with_progress("sampling", rt.generate, guide=str(guide) if guide else None, n=n, steps=steps,
                          sampler=sampler, eta=eta, seed=seed, scale=scale, mask=mask, guide_mean=guide_mean,
                          batch=batch)
    for note in s.notes:
        click.echo(f"note: {note}", err=True)
    guide_x = rt.load_images(str(guide)) if guide else None
    write_grid(out, s, guide_x)
    from sami_rt.io import write_npz

    npz = out.with_suffix(".npz")
    write_npz(npz, x=s.x, z=s.z if s.z is not None else np.zeros((0,)), seed=s.seed, steps=s.steps,
              scale=s.scale if s.scale is not None else np.nan)
    first = " (first tile: the guide)" if guide else ""
    guided = f" at guidance scale {s.scale:g}" if s.scale is not None else ""
    click.echo(f"{n} samples, {s.steps} {sampler} steps{guided}, {s.seconds:.2f} s -> {out}{first}, latents -> {npz}")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="NPZ to write (default: PATH's name with .npz, in the current directory).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Video: every n-th frame.")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="Video: PNG of the latent trajectory and its curvature (needs matplotlib).")
@click.option("--bgr-frames", is_flag=True,
              help="Video: decode every frame to BGR and convert it as an image is converted (the input that "
                   "encoding the frames as images gives), instead of reading a grey model's frames as a "
                   "yuv420p video's luma plane (identical where the colours are neutral, within a few grey "
                   "levels elsewhere; faster, the conversion to BGR skipped).")
@model_options
@friendly
def encode(path, out, every, plot, bgr_frames, model, device, threads):
    """Encode an image, a folder of images or a video into posterior means and variances.

    \b
    For a video, also the curvature (angle between successive steps) of the latent and the pixel
    trajectories: a straighter latent trajectory means a simpler representation of the motion.
    \b
    Examples:
      sami-rt encode examples/guide.png
      sami-rt encode examples/moving_disk.mp4 --plot curvature.png
    """
    from sami_rt.io import write_npz

    rt = open_runtime(model, device, threads)
    out = out or Path(path.stem + ".npz")
    if path.suffix.lower() in VIDEO_EXTS:
        v = run_with_progress("encoding", rt.encode_video, path=path, every=every, allow_luma=not bgr_frames)
        write_npz(out, frames=v.frames, mu=v.mu, var=v.var, latent_curvature=v.latent_curvature,
                  pixel_curvature=v.pixel_curvature, luma=v.luma,
                  latent_straightness=np.nan if v.latent_straightness is None else v.latent_straightness,
                  pixel_straightness=np.nan if v.pixel_straightness is None else v.pixel_straightness)
        click.echo(f"{len(v.frames)} frames -> {out}")
        for note in v.notes:
            click.echo(f"note: {note}", err=True)
        if v.stopped_at is not None:
            click.echo(f"note: decoding stopped at frame {v.stopped_at}; the frames before it were encoded", err=True)
        lat, pix = v.mean_latent_curvature, v.mean_pixel_curvature
        click.echo(f"{'trajectory':<12}{'mean curvature (deg)':>22}{'median':>10}{'cosine straightness':>21}")
        for name, vals, mean, cs in (("latent", v.latent_curvature, lat, v.latent_straightness),
                                     ("pixel", v.pixel_curvature, pix, v.pixel_straightness)):
            fin = vals[np.isfinite(vals)]
            if mean is None:
                click.echo(f"{name:<12}{'undefined (fewer than 3 frames)':>32}")
            else:
                click.echo(f"{name:<12}{mean:>22.1f}{float(np.median(fin)):>10.1f}{cs:>21.3f}")
        if plot:
            plot_video(v, plot)
            click.echo(f"plot -> {plot}")
    else:
        notes: list[str] = []
        x = rt.load_images(str(path), notes)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        mu, var = rt.encode(x)
        write_npz(out, mu=mu, var=var)
        click.echo(f"{len(mu)} image(s) -> {out}")
        for i in range(min(len(mu), 8)):
            click.echo(f"  mu {np.array2string(mu[i], precision=3)}  var {np.array2string(var[i], precision=4)}")


def plot_video(v, path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("--plot needs matplotlib (pip install matplotlib)") from None
    from sami_rt.io import atomic_write_bytes
    import io

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    d = v.mu.shape[1]
    for k in range(min(d, 8)):
        a.plot(v.frames, v.mu[:, k], label=f"z{k}")
    a.set_xlabel("frame")
    a.set_title("posterior means")
    a.legend(fontsize=7)
    b.plot(v.frames[1:-1], v.latent_curvature, label="latent")
    b.plot(v.frames[1:-1][: len(v.pixel_curvature)], v.pixel_curvature, label="pixel")
    b.set_xlabel("frame")
    b.set_ylabel("curvature (deg)")
    b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@main.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("-n", "n", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("interpolation.png"), show_default=True)
@sampling_options
@model_options
@friendly
def interpolate(a, b, n, out, steps, sampler, eta, seed, scale, batch, model, device, threads):
    """Decode n points on the line between two images' posterior means.

    \b
    Example:
      sami-rt interpolate left.png right.png -n 8 -o line.png
    """
    rt = open_runtime(model, device, threads)
    s = rt.interpolate(str(a), str(b), n, steps=steps, sampler=sampler, eta=eta, seed=seed, scale=scale, batch=batch)
    write_grid(out, s, ncol=n)
    click.echo(f"{n} images -> {out}")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--axis", type=int, required=True, help="Latent dimension to move.")
@click.option("--values", default="-2,-1,0,1,2", show_default=True,
              help="Comma-separated offsets from the image's posterior mean, in --unit.")
@click.option("--unit", type=click.Choice(["spread", "sd", "value"]), default=None,
              help="spread: the code's spread on the axis (std of held-out posterior means, recorded in the bundle; "
              "the default where it is); sd: the image's posterior standard deviation (the default otherwise); "
              "value: --values are the coordinates themselves.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("traversal.png"), show_default=True)
@sampling_options
@model_options
@friendly
def traverse(image, axis, values, unit, out, steps, sampler, eta, seed, scale, batch, model, device, threads):
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
    rt = open_runtime(model, device, threads)
    unit = rt.traverse_unit(unit)
    s = rt.traverse(str(image), axis, vals, unit=unit, steps=steps, sampler=sampler, eta=eta, seed=seed, scale=scale,
                    batch=batch)
    write_grid(out, s, ncol=len(vals))
    how = f"set to {values}" if unit == "value" else f"moved by {values} {unit}s"
    click.echo(f"{len(vals)} images (axis {axis} {how}) -> {out}")


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
    rt = open_runtime(model, device, threads)
    click.echo(f"{'dim':>4}{'posterior var':>15}{'posterior sd':>14}{'mean':>10}{'spread':>10}{'sd/spread':>11}")
    for r in rt.axes_table(str(images)):
        sp = "-" if r["spread"] is None else f"{r['spread']:.3g}"
        ratio = "-" if r["sd_in_spreads"] is None else f"{r['sd_in_spreads']:.3g}"
        click.echo(f"{r['dim']:>4}{r['var']:>15.4g}{r['sd']:>14.4g}{r['mean']:>10.3g}{sp:>10}{ratio:>11}")


main.add_command(bench)


def list_models() -> None:
    from sami_rt.bundle import BundleError, read_bundle
    from sami_rt.runtime import DEFAULT_MODEL, shipped_models

    for name, path in shipped_models().items():
        try:
            b = read_bundle(path)
        except BundleError as e:
            click.echo(f"{name}: unreadable ({e})")
            continue
        ev = b.manifest.evaluation
        figs = ", ".join(f"{k} {ev[k]}" for k in ("mig", "factor_axis_r2") if k in ev)
        click.echo(f"{name}{' (default)' if path == DEFAULT_MODEL else ''}: {b.channels}x{b.height}x{b.width}, "
                   f"latent dim {b.latent_dim}, guidance scale {b.default_scale:g}" + (f"; {figs}" if figs else ""))
        if b.manifest.description:
            click.echo(f"    {b.manifest.description}")


@main.command()
@model_options
@click.option("--list", "list_", is_flag=True, help="List the models shipped in the package and exit.")
@friendly
def info(model, device, threads, list_):
    """Show the model bundle, the backend and the versions in use."""
    import onnxruntime

    from sami_rt import __version__
    from sami_rt.sampler import has_extension

    if list_:
        list_models()
        return
    rt = open_runtime(model, device, threads)
    b = rt.bundle
    m = b.manifest
    click.echo(f"sami-rt {__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")
    click.echo(f"C++ sampler loop: {'built' if has_extension() else 'not built (numpy loop)'}")
    click.echo(f"bundle: {b.root} (format {m.format_version})")
    if m.description:
        click.echo(f"about: {m.description}")
    click.echo(f"image: {b.channels}x{b.height}x{b.width}, latent dim {b.latent_dim}, "
               f"{m.schedule.get('kind', '?')} schedule, T={b.T}")
    click.echo(f"graphs: {', '.join(sorted(b.graphs))}" + (f"; float16: {', '.join(sorted(b.graphs_fp16))}"
                                                          if b.graphs_fp16 else ""))
    click.echo(f"guidance scale for sampling: {b.default_scale:g}" + (" (the exact model)" if b.default_scale == 1 else ""))
    click.echo(f"backend: {rt.backend.name}")
    ev = m.evaluation
    if ev:
        click.echo("evaluation at export: " + ", ".join(f"{k}={v}" for k, v in ev.items()))


if __name__ == "__main__":
    main()
