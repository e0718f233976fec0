"""How low the conditioned variability could go with a model's code alone, whatever the sampler does.

    python -m benchmarks.code_bound MODEL [MODEL ...] [--n 40000] [--k 8] [--guides 100]

MODEL is a bundle directory (rebuilt from its reference weights) or a run directory. For each of --guides
held-out disks, the --k other disks (of --n) nearest to it in code space (distance in units of the guide's
posterior standard deviation) stand in for a perfect decoder's samples given the guide's code: their
variability over the test set's (train/evaluate.py's ratio) is the floor the encoder sets. The same with the
k nearest in true-factor space (standardised x, y, background) is the floor that the finite --n itself sets.
A model whose sampled ratio (eval.json's cond_variability_ratio) is far above its code floor is limited by its
guidance; a code floor near the ratio asked for means the encoder has to improve first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path):
    """(model, config) from a run directory (EMA weights) or a bundle's reference weights."""
    from export.source import is_bundle, load_bundle_model

    if is_bundle(path):
        model, cfg, _, _ = load_bundle_model(path)
        return model, cfg
    from train.loop import load_run

    model, cfg, _, _ = load_run(path)
    return model, cfg


def floors(model, cfg, n: int, k: int, guides: int, seed_offset: int = 777) -> tuple[float, float]:
    """(code floor, factor floor): variability ratios of the k nearest neighbours in code / factor space."""
    import torch

    from train.data import eval_set
    from train.evaluate import encode, variability

    x, f = eval_set(cfg, n, seed_offset)
    mu, var = (torch.from_numpy(a) for a in encode(model, x, batch=2000))
    fs = (f.double() - f.double().mean(0)) / f.double().std(0)
    tv = variability(x[: min(n, 5000)])
    code, factor = [], []
    for g in range(guides):
        d = ((mu - mu[g]) ** 2 / var[g]).sum(1)
        code.append(variability(x[d.argsort()[1 : k + 1]]))
        d = ((fs - fs[g]) ** 2).sum(1)
        factor.append(variability(x[d.argsort()[1 : k + 1]]))
    return float(np.mean(code)) / tv, float(np.mean(factor)) / tv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--n", type=int, default=40000, help="held-out disks searched for neighbours")
    ap.add_argument("--k", type=int, default=8, help="neighbours per guide")
    ap.add_argument("--guides", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    report_machine()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"| model | code floor ({args.k}-NN of {args.n}) | factor floor |\n| --- | --- | --- |")
    for path in args.models:
        model, cfg = load(path)
        if cfg.dataset != "disks":
            print(f"| {path} | - (no ground-truth factors: {cfg.dataset}) | - |")
            continue
        c, f = floors(model, cfg, args.n, args.k, args.guides)
        print(f"| {path} | {c:.3f} | {f:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
