"""``sami-rt encode``: an image, a folder of images or a video into posterior means and variances (a video
also into the curvature of its latent and pixel trajectories), written as a .npz archive."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from sami_rt.cli.shared import VIDEO_EXTS, friendly, model_options, open_runtime, run_with_progress
from sami_rt.errors import InputError

PLOT_EXTRA = 'pip install "sami-rt[plot]"'
MAX_ROWS = 8


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="NPZ to write (default: PATH's name with .npz, in the current directory). Images: mu, var and "
              "files (the image files, in row order); a video: frames, mu, var, the curvatures and straightness.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Video: every n-th frame.")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help=f"Video: the latent trajectory and its curvature as .png, .pdf or .svg (needs matplotlib: "
              f"{PLOT_EXTRA}).")
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
      sami-rt encode examples/ -o folder.npz
      sami-rt encode examples/moving_disk.mp4 --plot curvature.png
    """
    from sami_rt.media.outputs import check_npz_output, check_plot_output

    out = out or Path(path.stem + ".npz")
    check_npz_output(out)
    video = path.suffix.lower() in VIDEO_EXTS
    if plot:
        if not video:
            raise InputError(f"--plot draws a video's latent trajectory; {path} is not a video "
                             f"({', '.join(VIDEO_EXTS)})")
        check_plot_output(plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError(f"--plot needs matplotlib, which is not installed ({PLOT_EXTRA})") from None
    if video:
        _video_command(path, out, every, plot, bgr_frames, open_runtime(model, device, threads))
    else:
        encode_images(path, out, model, device, threads)


def encode_images(path: Path, out: Path, model, device, threads) -> None:
    from sami_rt.cli.shared import image_input
    from sami_rt.media.images import image_files
    from sami_rt.media.files import write_npz

    files = image_files(image_input(path, folder=True))  # checked before the model loads
    rt = open_runtime(model, device, threads)
    notes: list[str] = []
    mu, var = rt.encode(rt.load_images(files, notes))
    for note in notes:
        click.echo(f"note: {note}", err=True)
    write_npz(out, mu=mu, var=var, files=np.array([str(f) for f in files]))
    click.echo(f"{len(mu)} image(s) -> {out}")
    names = [f.name for f in files]
    w = min(max(len(n) for n in names), 32)
    for i in range(min(len(mu), MAX_ROWS)):
        click.echo(f"  {names[i]:<{w}}  mu {np.array2string(mu[i], precision=3)}  "
                   f"var {np.array2string(var[i], precision=4)}")
    if len(mu) > MAX_ROWS:
        click.echo(f"  ... and {len(mu) - MAX_ROWS} more in {out}")


def _video_command(path: Path, out: Path, every: int, plot, bgr_frames: bool, rt) -> None:
    from sami_rt.media.files import write_npz

    v = run_with_progress("encoding", rt.encode_video, path=path, every=every, allow_luma=not bgr_frames)
    write_npz(out, **v.arrays())  # what encode-corpus writes per video, too
    click.echo(f"{len(v.frames)} frames -> {out}")
    for note in v.notes:
        click.echo(f"note: {note}", err=True)
    if v.stopped_at is not None:
        click.echo(f"note: decoding stopped at frame {v.stopped_at}; the frames before it were encoded", err=True)
    click.echo(f"{'trajectory':<12}{'mean curvature (deg)':>22}{'median':>10}{'cosine straightness':>21}")
    for name, mean, median, cs in (
            ("latent", v.mean_latent_curvature, v.median_latent_curvature, v.latent_straightness),
            ("pixel", v.mean_pixel_curvature, v.median_pixel_curvature, v.pixel_straightness)):
        if mean is None:
            click.echo(f"{name:<12}{'undefined (' + undefined_why(v) + ')':>32}")
        else:
            click.echo(f"{name:<12}{mean:>22.1f}{median:>10.1f}{cs:>21.3f}")
    if plot:
        plot_video(v, plot, path.name)
        click.echo(f"plot -> {plot}")


def undefined_why(v) -> str:
    """Why a trajectory's mean curvature is undefined: too few frames, or steps of length zero throughout."""
    return "fewer than 3 frames" if len(v.frames) < 3 else "the trajectory does not move"


def video_figure(v, name: str):
    """The plot of ``encode VIDEO --plot`` as a matplotlib Figure (no pyplot state): the first 8 posterior means
    per frame, the latent and pixel curvatures; every panel with its y-label, the legends under the panels
    (never over a curve), the title the video's name, its frame count and mean curvatures."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4))
    # fixed margins (room for the title and the legends below the panels): constrained layout doubles the time
    fig.subplots_adjust(left=0.075, right=0.98, top=0.86, bottom=0.21, wspace=0.22)
    a, b = fig.subplots(1, 2)
    d = v.mu.shape[1]
    for k in range(min(d, 8)):
        a.plot(v.frames, v.mu[:, k], label=f"z{k}")
    a.set_xlabel("frame")
    a.set_ylabel("posterior mean")
    a.set_title(f"posterior means (dims 0-{min(d, 8) - 1} of {d})" if d > 1 else "posterior mean")
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(d, 8), frameon=False)
    b.plot(v.frames[1:-1][: len(v.latent_curvature)], v.latent_curvature, "k-", label="latent")
    b.plot(v.frames[1:-1][: len(v.pixel_curvature)], v.pixel_curvature, "--", color="tab:gray", label="pixel")
    b.set_xlabel("frame")
    b.set_ylabel("curvature (deg)")
    b.set_title("curvature: angle between successive steps")
    b.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    lat, pix = v.mean_latent_curvature, v.mean_pixel_curvature
    means = (f"mean curvature undefined ({undefined_why(v)})" if lat is None else
             f"mean curvature: latent {lat:.1f} deg, pixel " + ("undefined" if pix is None else f"{pix:.1f} deg"))
    fig.suptitle(f"{name}: {len(v.frames)} frames, {means}")
    return fig


def plot_video(v, path: Path, name: str) -> None:
    """``video_figure`` written to path, in the format its extension names."""
    import io

    from sami_rt.media.files import atomic_write_bytes

    buf = io.BytesIO()
    video_figure(v, name).savefig(buf, format=Path(path).suffix.lower()[1:], dpi=110)
    atomic_write_bytes(path, buf.getvalue())
