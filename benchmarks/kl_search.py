"""Binary search of the KL weight up to the posterior-collapse threshold (the paper's appendix, "Choosing
hyperparameters"): a larger KL weight gives a more factorised code, until the code stops carrying a factor.

    python -m benchmarks.kl_search --out DIR --config disks-small [--lo 1e-3] [--hi 1] [--iters 5]
        [--steps 1500] [--threads 1] [-- --latent-dim 3 --denoiser PATH --kl-free-bits 0.5 ...]

Each trial trains a run (``train/run.py --no-eval``, everything after ``--`` passed on) into
DIR/kl_W and scores it on disks it never saw (``factor_scores``): k-NN and linear R^2 per factor, the
linear R^2 of every single axis against every factor, MIG (20 equal-width bins), the spread of the
posterior means and the KL per axis. A trial *collapses* when some factor's k-NN R^2 falls below
--collapse-r2 (0.8): the code no longer carries it. On Fashion-MNIST (labelled, no factors) a trial is scored
by the linear-probe class accuracy of its posterior means on test images (``label_scores``) and collapses
when that falls below --collapse-acc (0.75, the shipped model's acceptance bar) or when any axis collapses to
the prior (mean KL below 0.05 nats over the test images). The search first checks both ends (--lo must hold
every factor, --hi must lose one), then halves the interval in log space --iters times. Every trial is a
row of DIR/search.jsonl; a rerun reuses finished trials (resumable), and a run stopped early is resumed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

ROOT = Path(__file__).resolve().parent.parent


def factor_scores(run_dir: Path, n: int = 2000) -> dict:
    import torch

    from train.data import DISK_FACTORS, eval_set
    from train.evaluate import FIT_SEED_OFFSET, encode
    from train.factor_figures import best_distinct_axes
    from train.loop import load_run
    from train.metrics import axis_r2, factor_classes, knn_r2, linear_r2, mig

    model, cfg, _, step = load_run(run_dir)
    torch.manual_seed(0)
    x, f = eval_set(cfg, n)
    x_fit, f_fit = eval_set(cfg, n, FIT_SEED_OFFSET)
    mu, var = encode(model, x)
    mu_fit, _ = encode(model, x_fit)
    f, f_fit = f.numpy(), f_fit.numpy()
    r2 = axis_r2(mu, f)
    axes = best_distinct_axes(r2)
    best = [float(r2[a, k]) for k, a in enumerate(axes)]
    kl = 0.5 * (var + mu**2 - 1 - np.log(var)).mean(0)
    return {
        "step": step,
        "knn_r2": knn_r2(mu_fit, f_fit, mu, f),
        "linear_r2": linear_r2(mu_fit, f_fit, mu, f),
        "axis_r2": r2.tolist(),
        "factor_axes": axes,
        "factor_axis_r2": best,
        "mig": mig(mu, factor_classes(f), 20),  # disentanglement_lib's convention: factors in 20 classes
        "mean_std": mu.std(0).tolist(),
        "var_mean": var.mean(0).tolist(),
        "kl_per_axis": kl.tolist(),
        "factors": list(DISK_FACTORS),
    }


def label_scores(run_dir: Path, n_fit: int = 5000, n_test: int = 2000) -> dict:
    """For a labelled data set (Fashion-MNIST): linear-probe class accuracy of the posterior means (fit on
    training images, scored on test images), the KL per axis and the axes that carry information."""
    from train.data import load_fashion_mnist
    from train.evaluate import encode
    from train.labelled import linear_probe
    from train.loop import load_run

    model, cfg, _, step = load_run(run_dir)
    x_fit, y_fit = load_fashion_mnist(cfg.data_path, "train", cfg.image_size)
    x, y = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
    i = np.random.default_rng(0).choice(len(x_fit), n_fit, replace=False)
    mu_fit, _ = encode(model, x_fit[i])
    mu, var = encode(model, x[:n_test])
    kl = 0.5 * (var + mu**2 - 1 - np.log(var)).mean(0)
    return {"step": step, "probe_accuracy": linear_probe(mu_fit, y_fit.numpy()[i], mu, y.numpy()[:n_test])["accuracy"],
            "kl_per_axis": kl.tolist(), "active_axes": int((kl > 0.05).sum()), "mean_std": mu.std(0).tolist(),
            "var_mean": var.mean(0).tolist()}


def train(run_dir: Path, args, kl: float) -> float:
    """Train (or resume) a trial run; returns the seconds spent."""
    ckpt = run_dir / "checkpoint.pt"
    base = [sys.executable, str(ROOT / "train" / "run.py"), "--no-eval"]
    if ckpt.is_file():
        cmd = base + ["--resume", str(run_dir), "--threads", str(args.threads)]
    else:
        cmd = base + ["--config", args.config, "--out", str(run_dir), "--kl-weight", repr(kl), "--steps",
                      str(args.steps), "--threads", str(args.threads), *args.extra]
    t0 = time.time()
    with open(run_dir.parent / f"{run_dir.name}.log", "ab") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.time() - t0


def trial(args, kl: float, rows: dict) -> dict:
    key = f"{kl:.4g}"
    if key in rows:
        return rows[key]
    run_dir = args.out / f"kl_{key}"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    secs = train(run_dir, args, kl)
    if args.labels:
        s = label_scores(run_dir)
        row = {"kl_weight": kl, "run": str(run_dir), "train_s": round(secs, 1), "extra": args.extra, **s,
               "collapsed": bool(s["probe_accuracy"] < args.collapse_acc or s["active_axes"] < len(s["kl_per_axis"]))}
        with open(args.out / "search.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows[key] = row
        print(f"kl {kl:.4g}: probe accuracy {s['probe_accuracy']:.3f}, {s['active_axes']} axes with KL > 0.05, KL/axis "
              f"{np.round(s['kl_per_axis'], 2).tolist()} {'COLLAPSED' if row['collapsed'] else 'ok'} ({secs:.0f} s)",
              flush=True)
        return row
    s = factor_scores(run_dir)
    row = {"kl_weight": kl, "run": str(run_dir), "train_s": round(secs, 1), "extra": args.extra, **s,
           "collapsed": bool(min(s["knn_r2"]) < args.collapse_r2)}
    with open(args.out / "search.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    rows[key] = row
    print(f"kl {kl:.4g}: knn {np.round(s['knn_r2'], 3).tolist()} axis r2 {np.round(s['factor_axis_r2'], 3).tolist()} "
          f"(axes {s['factor_axes']}) MIG {s['mig']:.3f} std {np.round(s['mean_std'], 2).tolist()} "
          f"{'COLLAPSED' if row['collapsed'] else 'ok'} ({secs:.0f} s)", flush=True)
    return row


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="disks-small")
    ap.add_argument("--lo", type=float, default=1e-3, help="a KL weight expected to keep every factor")
    ap.add_argument("--hi", type=float, default=1.0, help="a KL weight expected to collapse")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--collapse-r2", type=float, default=0.8)
    ap.add_argument("--collapse-acc", type=float, default=0.75,
                    help="labelled data sets: a trial collapses when the linear-probe class accuracy falls below this")
    args = ap.parse_args(argv)
    report_machine()
    args.labels = args.config.startswith("fashion-mnist")
    args.extra = extra
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    if (args.out / "search.jsonl").is_file():
        for line in (args.out / "search.jsonl").read_text().splitlines():
            r = json.loads(line)
            rows[f"{r['kl_weight']:.4g}"] = r
    lo, hi = args.lo, args.hi
    if trial(args, lo, rows)["collapsed"]:
        print(f"--lo {lo:g} already collapses: lower it", flush=True)
        return 1
    if not trial(args, hi, rows)["collapsed"]:
        print(f"--hi {hi:g} keeps every factor: the threshold is above it", flush=True)
        return 0
    for _ in range(args.iters):
        mid = math.exp(0.5 * (math.log(lo) + math.log(hi)))
        if trial(args, mid, rows)["collapsed"]:
            hi = mid
        else:
            lo = mid
    print(f"largest KL weight that keeps every factor: {lo:.4g} (collapse at {hi:.4g})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
