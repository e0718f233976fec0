"""Where an export's model comes from: a run of train/run.py (its checkpoint, ``load_model``) or a bundle
(its reference weights, ``load_bundle_model``: to export a bundle again when how the graphs are written
changes and its run is gone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from sami_rt.contract.bundle import BundleError, read_bundle
from sami_rt.errors import ExportError
from train.config import Config


def is_bundle(source: str | Path) -> bool:
    """Whether ``source`` is a model bundle (a directory with a manifest.json) rather than a run."""
    return (Path(source) / "manifest.json").is_file()


def load_bundle_model(source: str | Path):
    """(model, config, abar, manifest) from a bundle's reference weights (reference.npz) and the training
    configuration its manifest records: what a bundle is exported again from when its run is gone (a change of
    how the graphs are written). The weights are the ones the bundle was exported with (EMA or raw, as its
    manifest says)."""
    from sami_reference import load_reference

    try:
        b = read_bundle(source)
        if b.reference is None:
            raise ExportError(f"bundle {source} keeps no reference weights to export again (a bundle on a frozen "
                              "denoiser, or one written before they were kept): export it from its run directory")
        model, abar = load_reference(b)
        cfg = Config.from_dict(b.manifest.training["config"])
    except (BundleError, KeyError, TypeError, ValueError) as e:
        raise ExportError(f"cannot export again from bundle {source}: {e}") from None
    return model, cfg, abar, b.manifest


def load_model(source: str | Path, ema: bool = True):
    """(model, config, abar, checkpoint path) from a run directory or a checkpoint file."""
    from train.loop import checkpoint_path, load_run

    path = checkpoint_path(source)
    if not path.is_file():
        raise ExportError(f"no checkpoint at {path} (pass a run directory of train/run.py or its checkpoint.pt)")
    model, cfg, abar, _ = load_run(path, ema)
    if cfg.denoiser:  # trained on a frozen denoiser
        from train.frozen import FrozenDenoiser

        d = model.denoiser
        if isinstance(d, FrozenDenoiser) and d.kind == "torch":
            model.denoiser = d.net  # this project's UNet: exported like any other
        # an ONNX denoiser is wrapped and fused as ONNX (export/compose.py); a diffusers one is traced
    return model, cfg, abar, path


def carried_defaults(carried, description: str, steps, scale, interval):
    """(description, sampling steps, scale, interval) for exporting a bundle again: each one given here, else the
    source bundle's (``carried``, its manifest)."""
    return (description or carried.description, steps if steps is not None else carried.sampling_steps,
            scale if scale is not None else carried.sampling_scale,
            interval if interval is not None else tuple(carried.sampling_interval))


def run_provenance(ckpt: Path, cfg: Config, ema: bool, log: Callable[[str], None]) -> tuple[dict, dict]:
    """(evaluation summary, training record) of a run exported from its checkpoint: the summary of the run's
    eval.json (a line when it is a quick one), and the configuration, checkpoint name and weights used."""
    ev_file = ckpt.parent / "eval.json"
    ev = json.loads(ev_file.read_text()) if ev_file.is_file() else {}
    if ev.get("protocol") == "quick":
        log(f"  evaluation: {ev_file} is a quick one (python train/evaluate.py {ckpt.parent} runs the full protocol)")
    return ev.get("summary", {}), {"config": cfg.to_dict(), "checkpoint": ckpt.name, "weights": "ema" if ema else "raw"}
