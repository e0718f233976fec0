"""Guided samples against the guidance scale: the share of pixels at black or white and the mean absolute
difference between neighbouring pixels (speckle), for the scale limits in sami_rt.runtime (FAR_SCALE's note,
MAX_SCALE's refusal). ``python benchmarks/scale_saturation.py [--model NAME] [--guide PNG] [--n 16]``."""

from __future__ import annotations

import argparse
import platform

import numpy as np

from sami_rt import Runtime
from sami_rt.hardware.cpuinfo import report_machine

SCALES = (1, 3, 10, 30, 100, 300, 1000, 1e4, 1e5, 1e6)


def speckle(x: np.ndarray) -> float:
    """Mean absolute difference of horizontally and vertically neighbouring pixels, summed ([N, C, H, W])."""
    return float(np.abs(np.diff(x, axis=-1)).mean() + np.abs(np.diff(x, axis=-2)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--guide", default="examples/guide.png")
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    report_machine()
    print("cpu:", next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                       platform.machine()))
    rt = Runtime(args.model, device="cpu", threads=1)
    g = rt.load_images(args.guide)
    print(f"model {rt.bundle.root.name}, default scale {rt.bundle.manifest.sampling_scale:g}; guide {args.guide}: speckle "
          f"{speckle(g):.3f}")
    print("| scale | pixels at black or white | speckle |\n| --- | --- | --- |")
    p = rt.plan_generate(guide=args.guide, n=args.n, seed=0)  # the latents and steps of every row below
    for s in SCALES:  # sample_rows directly: generate refuses scales above MAX_SCALE
        z, mask, _ = p.row_guidance(rt.latent_dim)
        x = rt.sample_rows(p.coeffs, p.seed, np.arange(p.n), z, np.ascontiguousarray(mask),
                           np.full(p.n, s, dtype=np.float32))
        print(f"| {s:g} | {np.mean(np.abs(x) > 0.999):.3f} | {speckle(x):.3f} |")

if __name__ == "__main__":
    main()
