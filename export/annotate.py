"""Record what a newer export records in an existing bundle, without exporting it again:
``python export/annotate.py BUNDLE [BUNDLE ...]``.

That is the posterior-variance range of training-distribution images (manifest ``posterior_variance``),
which the runtime compares a guide's with to say when a guide lies far outside what the model was trained on,
and, with ``--sampling-steps N``, the DDPM step count that sampling takes by default (manifest
``sampling.steps``): fewer than 100 measured to match 100 by ``python -m benchmarks.sampler_steps --model
BUNDLE``, or more where 100 lose what the model is for (``benchmarks/class_keeping.py --steps``). The other
sampling defaults can be set the same way once measured: ``--sampling-scale S`` (``sampling.scale``),
``--sampling-interval LO HI`` (``sampling.interval``, the noise levels the scale applies at) and
``--description TEXT`` (which should then say what was measured at those defaults).
It is measured as ``export/run.py`` measures it (``export.core.variance_range``: the same held-out images of
the run's data, rebuilt from the manifest's training configuration), through the bundle's own ONNX encoder,
so a bundle without reference weights or on an external denoiser is annotated too. The graphs and every other
file stay as they are; ``manifest.json`` is rewritten atomically in the current format (version 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def annotate(root: Path, log=print, sampling_steps: int | None = None, sampling_scale: float | None = None,
             sampling_interval=None, description: str | None = None) -> bool:
    """Add the variance range (and the sampling defaults and description given) to the bundle at ``root``; False
    (and a line saying why) where its data cannot be read here. Raises SamiError for a bundle that does not
    load or a default out of range."""
    from export.core import check_sampling_interval, check_sampling_scale, check_sampling_steps, variance_range
    from sami_rt.contract.bundle import read_bundle, write_manifest
    from sami_rt.errors import ExportError
    from sami_rt.runtime import Runtime
    from train.config import Config

    rt = Runtime(root, device="cpu")
    b = rt.bundle
    check_sampling_steps(sampling_steps, b.manifest.T)
    check_sampling_scale(sampling_scale)
    interval = None if sampling_interval is None else check_sampling_interval(sampling_interval)
    cfg_dict = (b.manifest.training or {}).get("config")
    if not isinstance(cfg_dict, dict):
        raise ExportError(f"{root}: manifest.json records no training configuration, so the data its range is "
                          "measured on is unknown")
    cfg = Config.from_dict(cfg_dict)
    r = variance_range(lambda x: rt.backend.encode(x.numpy())[1], cfg, log)
    if r is None:
        return False
    export = dict(b.manifest.export or {})
    export["annotated"] = {"by": "export/annotate.py", "posterior_variance": True,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    changes = {"variance_range": r, "export": export}
    if sampling_steps is not None:
        changes["sampling_steps"] = int(sampling_steps)
        export["annotated"]["sampling_steps"] = int(sampling_steps)
        log(f"  default sampling: ddpm, {sampling_steps} steps")
    if sampling_scale is not None:
        changes["sampling_scale"] = export["annotated"]["sampling_scale"] = float(sampling_scale)
        log(f"  default guidance scale: {sampling_scale:g}")
    if interval is not None:
        changes["sampling_interval"] = interval
        export["annotated"]["sampling_interval"] = list(interval)
        log(f"  guidance interval: noise levels {interval[0]:g}-{interval[1]:g}")
    if description is not None:
        changes["description"] = description
        export["annotated"]["description"] = True
    write_manifest(b.root, b.manifest.replace(**changes))
    read_bundle(b.root)  # the reader accepts what was written
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", type=Path, nargs="+", help="bundle directories to annotate in place")
    ap.add_argument("--sampling-steps", type=int, default=None, metavar="N",
                    help="record N as the DDPM steps sampling takes by default (fewer than 100 measured to match "
                         "100 by python -m benchmarks.sampler_steps --model BUNDLE, or more where 100 lose what "
                         "the model is for, e.g. benchmarks/class_keeping.py --steps)")
    ap.add_argument("--sampling-scale", type=float, default=None, metavar="S",
                    help="record S as the default guidance scale (measured first)")
    ap.add_argument("--sampling-interval", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="record the noise levels t / (T - 1) the scale applies at (1 elsewhere; measured first)")
    ap.add_argument("--description", default=None, help="replace the manifest's one-line description")
    args = ap.parse_args(argv)
    from sami_rt.errors import SamiError

    failed = 0
    for root in args.bundles:
        print(f"annotating {root}")
        try:
            failed += not annotate(root, log=print, sampling_steps=args.sampling_steps,
                                   sampling_scale=args.sampling_scale, sampling_interval=args.sampling_interval,
                                   description=args.description)
        except SamiError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
