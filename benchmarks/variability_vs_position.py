"""What a conditioned-variability ratio means in pixels: the ratio that guided samples would score if they
kept a guide's background exactly and placed its disk with a Gaussian error of standard deviation sigma
(per axis), or ignored the guide's position altogether, for several versions of the disks data.

    python -m benchmarks.variability_vs_position [--guides 20] [--per-guide 64] [--seed 0]

The ratio is train/evaluate.py's: the mean squared distance of the samples from their own mean (per pixel),
averaged over guides, over that of the test set. No model is involved: this is the floor that position
errors alone set, whatever the model.
"""

from __future__ import annotations

import argparse
import sys

import torch

from sami_rt.hardware.cpuinfo import report_machine
from train.data import render_disks, sample_disk_factors

DATA = [  # (label, foreground, background range, radius)
    ("DESIGN.md prototypes: 0.5 disk, background [0, 1], radius 4", 0.5, (0.0, 1.0), 4.0),
    ("disks-small: white disk, background [0, 0.6], radius 4", 1.0, (0.0, 0.6), 4.0),
    ("white disk, background [0, 0.6], radius 6", 1.0, (0.0, 0.6), 6.0),
]
SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def variability(x: torch.Tensor) -> float:
    return float(((x - x.mean(0, keepdim=True)) ** 2).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guides", type=int, default=20)
    ap.add_argument("--per-guide", type=int, default=64)
    ap.add_argument("--test", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    report_machine()
    g = torch.Generator().manual_seed(args.seed)
    print("| data | " + " | ".join(f"sigma {s:g} px" for s in SIGMAS) + " | position ignored |")
    print("| --- |" + " --- |" * (len(SIGMAS) + 1))
    for label, fg, bg, r in DATA:
        f = sample_disk_factors(args.test, 32, r, g, bg)
        tv = variability(render_disks(f, 32, r, fg))
        row = []
        for s in SIGMAS:
            vs = []
            for k in range(args.guides):
                c = f[k : k + 1].repeat(args.per_guide, 1)
                c[:, :2] += s * torch.randn(args.per_guide, 2, generator=g, dtype=torch.float64)
                c[:, :2] = c[:, :2].clamp(r, 32 - r)  # the disk stays inside the image, as in the data
                vs.append(variability(render_disks(c, 32, r, fg)))
            row.append(sum(vs) / len(vs) / tv)
        vs = []
        for k in range(args.guides):  # background kept, position drawn from the data's distribution
            c = sample_disk_factors(args.per_guide, 32, r, g, bg)
            c[:, 2] = f[k, 2]
            vs.append(variability(render_disks(c, 32, r, fg)))
        row.append(sum(vs) / len(vs) / tv)
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
