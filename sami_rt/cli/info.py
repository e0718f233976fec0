"""``sami-rt info``: the versions, the sampling loop, the bundle, the backend and the devices present here,
the bundle's evaluation at export; ``--list``: the models shipped in the package."""

from __future__ import annotations

import click
import numpy as np

from sami_rt.cli.shared import friendly, model_options, open_runtime
from sami_rt.sampling.schedule import FULL_INTERVAL

WIDTH = 110  # a value longer than this is cut, saying how many entries it has


@click.command()
@model_options
@click.option("--list", "list_", is_flag=True, help="List the models shipped in the package and exit.")
@friendly
def info(model, device, threads, list_):
    """Show the model bundle, the backend, the devices present here and the versions in use.

    \b
    A --device that is not available here is reported (with the devices that are), not an error.
    """
    import onnxruntime

    from sami_rt import __version__
    from sami_rt.backends import BackendError, device_report
    from sami_rt.sampling.loop import loop_status
    from sami_rt.runtime import default_steps

    if list_:
        list_models()
        return
    try:
        rt = open_runtime(model, device, threads)
        b, backend = rt.bundle, rt.backend.name
    except BackendError as e:
        if device == "auto":
            raise
        from sami_rt.contract.bundle import read_bundle
        from sami_rt.runtime import resolve_model

        b, backend = read_bundle(resolve_model(model)), f"none for --device {device}: {e}"
    m = b.manifest
    click.echo(f"sami-rt {__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}")
    click.echo(f"sampling loop: {loop_status()[1]}")
    click.echo(f"bundle: {b.root} (format {m.format_version})")
    if m.description:
        click.echo(f"about: {m.description}")
    click.echo(f"image: {b.manifest.image.channels}x{b.manifest.image.height}x{b.manifest.image.width}, latent dim {b.manifest.latent_dim}, "
               f"{m.schedule.get('kind', '?')} schedule, T={b.manifest.T}")
    click.echo(f"graphs: {', '.join(sorted(b.graphs))}" + (f"; float16: {', '.join(sorted(b.graphs_fp16))}"
                                                          if b.graphs_fp16 else ""))
    click.echo(f"guidance scale for sampling: {b.manifest.sampling_scale:g}" + (" (the exact model)" if b.manifest.sampling_scale == 1 else ""))
    if tuple(b.manifest.sampling_interval) != FULL_INTERVAL:
        lo, hi = b.manifest.sampling_interval
        click.echo(f"guidance interval: the scale at noise levels t / (T - 1) in [{lo:g}, {hi:g}], 1 elsewhere")
    click.echo(f"default sampling: ddpm, {default_steps(b, 'ddpm')} steps"
               + (" (recorded in the bundle)" if b.manifest.sampling_steps else ""))
    click.echo(f"backend: {backend}")
    from sami_rt.hardware.cpuinfo import bf16_support, cpu_model, flags_line

    click.echo(f"CPU: {cpu_model()}; {bf16_support()[1]}; {flags_line()}")
    click.echo("devices here:")
    for name, ok, what in device_report(b):
        click.echo(f"  {name:<9}{'yes' if ok else 'no':<5}{what}")
    if m.evaluation:
        click.echo("evaluation at export:")
        click.echo("\n".join(key_values(m.evaluation)))


def fmt(v) -> str:
    """A figure for people: floats to 4 significant digits, lists and dicts item by item."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, dict):
        return _items([f"{k}={fmt(x)}" for k, x in v.items()])
    if isinstance(v, (list, tuple)):
        return _items([fmt(x) for x in v])
    return str(v)


def _items(parts: list[str]) -> str:
    text = ", ".join(parts)
    if len(text) <= WIDTH:
        return text
    keep = []
    for p in parts:
        if len(", ".join(keep + [p])) > WIDTH - 16:
            break
        keep.append(p)
    return ", ".join(keep) + f", ... ({len(parts)} in all)"


def key_values(d: dict, indent: str = "  ") -> list[str]:
    """``key: value`` lines with the values aligned."""
    w = max(len(str(k)) for k in d) + 1
    return [f"{indent}{str(k) + ':':<{w}} {fmt(v)}" for k, v in d.items()]


def list_models() -> None:
    from sami_rt.contract.bundle import BundleError, read_bundle
    from sami_rt.runtime import DEFAULT_MODEL, shipped_models

    for name, path in shipped_models().items():
        try:
            b = read_bundle(path)
        except BundleError as e:
            click.echo(f"{name}: unreadable ({e})")
            continue
        ev = b.manifest.evaluation
        figs = ", ".join(f"{k} {ev[k]}" for k in ("mig", "factor_axis_r2") if k in ev)
        click.echo(f"{name}{' (default)' if path == DEFAULT_MODEL else ''}: {b.manifest.image.channels}x{b.manifest.image.height}x{b.manifest.image.width}, "
                   f"latent dim {b.manifest.latent_dim}, guidance scale {b.manifest.sampling_scale:g}" + (f"; {figs}" if figs else ""))
        if b.manifest.description:
            click.echo(f"    {b.manifest.description}")
