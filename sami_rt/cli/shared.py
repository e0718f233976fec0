"""What the ``sami-rt`` commands share: the error handler, the model and sampling options, the checks made
before any work, opening the runtime, progress bars, image grids and their latents."""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from pathlib import Path

import click
import numpy as np

from sami_rt.backends import DEVICES
from sami_rt.backends.precision import PRECISIONS
from sami_rt.errors import InputError, SamiError
from sami_rt.media.images import VIDEO_EXTS  # noqa: F401 (the CLI modules take it from here)
from sami_rt.runtime import DEFAULT_MODEL, MAX_SCALE, SAMPLERS, scale_too_large
from sami_rt.sampling.schedule import FULL_INTERVAL, check_interval



def friendly(fn):
    """Turn the runtime's own errors (``sami_rt.errors.SamiError``) into one-line CLI errors (exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except SamiError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def model_options(fn):
    # --precision is kept in the click context (open_runtime reads it), so the commands' signatures stay as they were
    fn = click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
                      expose_value=False, callback=_keep_precision, is_eager=False,
                      help="auto: float32 on the CPU, float16 on a GPU where the model has it; bf16: bfloat16 with "
                      "OpenVINO where the CPU has AMX-BF16 or AVX512-BF16 (elsewhere one line says so and float32 "
                      "runs); f32, f16.")(fn)
    fn = click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Backend threads (0 = OMP_NUM_THREADS where set, else the backend's default).")(fn)
    fn = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                      help="Where to run: auto picks TensorRT, then CUDA, then the CPU (onnxruntime; OpenVINO with "
                      "--precision bf16 on a CPU with bf16); openvino: OpenVINO on the CPU (pip install "
                      "\"sami-rt[openvino]\").")(fn)
    fn = click.option("--model", type=click.Path(path_type=Path), default=None,
                      help="Model bundle directory, or the name of a model shipped in the package (`sami-rt info "
                      f"--list`; default: {DEFAULT_MODEL.name}).")(fn)
    return fn


def sampling_options(fn):
    fn = click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True,
                      help="Samples per backend call.")(fn)
    fn = click.option("--scale", type=float, default=None, callback=_positive_scale,
                      help="Guidance scale s > 0 (default: the model's, shown by `sami-rt info`; 1 is the exact "
                      "model).")(fn)
    fn = click.option("--interval", type=float, nargs=2, default=None, callback=_interval, metavar="LO HI",
                      help="Guide at --scale only at the noise levels t / (T - 1) in [LO, HI] (0 the least noisy), "
                      "at 1 (the exact model) elsewhere (default: the model's, shown by `sami-rt info`; 0 1 guides "
                      "every step).")(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True, help="Sample i uses noise keyed by (seed, i).")(fn)
    fn = click.option("--eta", type=click.FloatRange(min=0), default=None,
                      help="DDIM eta (ddpm: 1, ddim: 0; the dpmpp samplers take none).")(fn)
    fn = click.option("--sampler", type=click.Choice(SAMPLERS), default="ddpm", show_default=True,
                      help="ddpm (ancestral), ddim (deterministic unless --eta), dpmpp-2m (DPM-Solver++(2M), "
                      "deterministic) or dpmpp-2m-sde (its SDE form).")(fn)
    fn = click.option("--steps", type=int, default=None,
                      help="Sampling steps (default: for ddpm the steps the bundle records (`sami-rt info`), else 100; 50 for "
                      "ddim, 20 for the dpmpp samplers).")(fn)
    return fn


def _interval(ctx, param, value):
    """--interval: refused before any work unless 0 <= LO < HI <= 1 (as Runtime.generate)."""
    if value is None:
        return None
    try:
        return check_interval(value)
    except ValueError as e:
        raise click.ClickException(f"--interval: {e}") from None


def _positive_scale(ctx, param, value):
    """--scale: refused before any work unless a finite number above 0 and at most MAX_SCALE (as
    Runtime.generate)."""
    if value is not None and not (np.isfinite(value) and value > 0):
        raise click.ClickException(f"--scale must be a finite number above 0 (1 is the exact model), got {value:g}")
    if value is not None and value > MAX_SCALE:  # before the model loads
        raise click.ClickException(f"--{scale_too_large(value)}")
    return value


def image_input(path, option: str = "", folder: bool = False):
    """An image argument (or with ``folder`` a folder of images), checked before the model loads: a missing
    path, a video (pointing at `sami-rt encode`, which reads its frames) or a folder without images."""
    from sami_rt.errors import ImageError
    from sami_rt.media.images import image_files

    if path is None:
        return path
    if Path(path).suffix.lower() in VIDEO_EXTS and not Path(path).is_dir():
        what = "an image or a folder of images" if folder else "an image"
        raise InputError(f"{option + ' ' if option else ''}{path} is a video, not {what} (to encode a video's "
                         f"frames: sami-rt encode {path})")
    if not Path(path).exists():
        raise ImageError(f"image {path} does not exist")
    if folder:
        image_files(path)  # InputError for a folder without images
    return path


def grid_outputs(out: Path) -> Path:
    """Check a grid's image path and its latents' (the same name with .npz) before any work; the latter."""
    from sami_rt.media.outputs import check_image_output, check_npz_output

    check_image_output(out)
    npz = out.with_suffix(".npz")
    check_npz_output(npz, f"-o {out}: its latents")
    return npz


def _keep_precision(ctx, param, value):
    ctx.meta["sami_rt.precision"] = value
    return value


def open_runtime(model, device, threads, precision: str | None = None):
    """The Runtime for a command; ``precision`` None: the command's --precision."""
    from sami_rt.runtime import Runtime

    if precision is None:
        ctx = click.get_current_context(silent=True)
        precision = ctx.meta.get("sami_rt.precision", "auto") if ctx is not None else "auto"
    rt = Runtime(model, device, threads, precision)
    click.echo(f"model: {rt.bundle.root} ({rt.backend.name})", err=True)
    for note in rt.backend.notes:
        click.echo(f"note: {note}", err=True)
    return rt


class _Ticker:
    def __init__(self):
        self.last = time.monotonic()

    def touch(self) -> None:
        """Something else was printed: the next tick waits a full interval from now."""
        self.last = time.monotonic()


@contextlib.contextmanager
def ticking(label: str, every: float = 10.0):
    """While the block runs, a line on stderr saying how long ``label`` has taken whenever nothing was printed
    for ``every`` seconds (the yielded object's ``touch()`` says something was), so that no wait, such as Ray
    and Serve starting, is silent for longer."""
    stop, t0, ticker = threading.Event(), time.monotonic(), _Ticker()

    def tick():
        while not stop.wait(min(1.0, every / 4)):
            now = time.monotonic()
            if now - ticker.last >= every:
                click.echo(f"{label}: {now - t0:.0f} s so far", err=True)
                ticker.touch()

    t = threading.Thread(target=tick, name="ticker", daemon=True)
    t.start()
    try:
        yield ticker
    finally:
        stop.set()
        t.join()


def run_with_progress(label, fn, **kw):
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        state = {"last": 0}

        def progress(done, total):
            bar.length = max(total, 1)
            bar.update(done - state["last"])
            state["last"] = done

        return fn(progress=progress, **kw)


def zoom_option(fn):
    from sami_rt.media.grids import MAX_ZOOM, MIN_TILE

    return click.option("--zoom", type=click.IntRange(1, MAX_ZOOM), default=None,
                        help=f"Enlarge each tile N times, nearest neighbour (default: the smallest N that makes "
                        f"tiles at least {MIN_TILE} px, 3 for 32-px models).")(fn)


def _lead_first(n: int, labels, lead: str | None):
    """(tiles, labels) of a grid of n samples, after a leading tile captioned ``lead`` where there is one."""
    return (n + 1, [lead] + list(labels or [""] * n)) if lead else (n, labels)


def check_grid_fits(out: Path, rt, n: int, ncol=8, zoom=None, labels=None, title=None, lead: str | None = None) -> None:
    """Before any sampling: the grid ``write_grid`` will draw for n samples of the model (after a leading tile
    captioned ``lead``: generate's guide, traverse's image) fits ``out``'s format (WebP and JPEG limit a side)
    and a sane size; InputError, one sentence, otherwise."""
    from sami_rt.media.grids import auto_zoom, check_grid, grid_shape

    tile = (rt.bundle.manifest.image.height, rt.bundle.manifest.image.width)
    tiles, labels = _lead_first(n, labels, lead)
    try:
        check_grid(out, grid_shape(tiles, tile, ncol, zoom or auto_zoom(*tile), labels, title, lead=bool(lead)))
    except ValueError as e:
        raise InputError(f"-o {out}: {e}") from None


def write_grid(path: Path, samples, lead_x=None, ncol=8, zoom=None, labels=None, title=None, lead: str = "guide"):
    """The samples as a grid (``sami_rt.media.grids.labelled_grid``) under ``title``; with ``lead_x`` (an image in model
    space, [1, C, H, W]) a leading tile in a column of its own, framed and captioned ``lead``; ``zoom`` None:
    ``grids.auto_zoom``."""
    from sami_rt.media.grids import auto_zoom, labelled_grid
    from sami_rt.media.images import from_model, write_image

    imgs, marked = samples.images, ()
    _, labels = _lead_first(len(imgs), labels, lead if lead_x is not None else None)
    if lead_x is not None:
        imgs, marked = np.concatenate([from_model(lead_x), imgs]), (0,)
    write_image(path, labelled_grid(imgs, ncol, zoom or auto_zoom(*imgs.shape[1:3]), labels, marked, title,
                                    lead=lead_x is not None))


def sampling_title(rt, what: str, sampler: str, steps, scale, guided: bool = True, interval=None) -> str:
    """A grid's title: the model, what the tiles are, and how they were sampled (the sampler, its steps, the
    guidance scale and its interval where it is not every level, as they will run: the bundle's defaults where
    none was given)."""
    from sami_rt.runtime import default_steps

    steps = default_steps(rt.bundle, sampler) if steps is None else steps
    how = f"{sampler} {steps} steps"
    if guided:
        how += f", scale {rt.bundle.manifest.sampling_scale if scale is None else scale:g}"
        levels = interval_levels(rt, interval)
        how += f" at {levels}" if levels else ""
    return f"{rt.bundle.root.name}: {what}; {how}"


def interval_levels(rt, interval=None) -> str:
    """'levels LO-HI' for the guidance interval a call runs with (``interval``, else the bundle's), or '' where
    the scale applies at every level."""
    lo, hi = rt.bundle.manifest.sampling_interval if interval is None else interval
    return "" if (lo, hi) == FULL_INTERVAL else f"levels {lo:g}-{hi:g}"


def write_latents(npz: Path, s, **extra) -> None:
    """A grid's samples beside it: images x in model space, latents z, seed, steps, guidance scale, extras."""
    from sami_rt.media.files import write_npz

    write_npz(npz, x=s.x, z=s.z if s.z is not None else np.zeros((0,)), seed=s.seed, steps=s.steps,
              scale=s.scale if s.scale is not None else np.nan, **extra)
