"""A shipped bundle's code against the simple baselines, by the evaluation's own probe (issue 30): the linear
probe on the posterior means of the torch-free runtime's encoder, on raw pixels and on PCA of the code's size,
and the top-k curve (the code's k most certain axes against the first k principal components).

    python -m benchmarks.probe_baselines [--model fashion-mnist] [--protocol training|test-halves|validation]
        [--cv] [--n-fit 5000] [--n-test 2000] [--seed 0]

``--protocol training`` (the evaluation's, train/natural.py ``labelled_sets``): ``--n-fit`` images drawn
(seeded) from the training split to fit, the first ``--n-test`` images of the test split to score.
``test-halves`` (issue 30's independent probe): the first half of test images 0..n-test-1 to fit, the second
half to score. ``validation`` (for choosing between runs): ``--n-fit`` images drawn from the training images
the run trained on (its ``n_train``), scored on the held-out rest of the training split. ``--cv`` chooses
each probe's regularisation by 3-fold cross-validation on the fit set (train/labelled.py ``linear_probe``);
without it C = 1. Prints a table and the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from sami_rt import Runtime
from sami_rt.hardware.cpuinfo import report_machine
from train.config import Config
from train.data import load_fashion_mnist
from train.labelled import linear_probe
from train.natural import labelled_sets, probe_baselines


def fit_and_score(cfg, protocol: str, n_fit: int, n_test: int, seed: int):
    """(x_fit, y_fit, x_score, y_score, what was scored) for a protocol (module docstring)."""
    if protocol == "training":
        x_fit, y_fit, x, y, *_ = labelled_sets(cfg, n_fit, n_test, seed)
        what = f"{n_fit} training images fitted (seed {seed}), test images 0-{n_test - 1} scored"
        return x_fit.numpy(), y_fit, x.numpy(), y, what
    if cfg.dataset != "fashion-mnist":
        raise SystemExit(f"--protocol {protocol} is for Fashion-MNIST bundles; this one trained on {cfg.dataset}")
    if protocol == "test-halves":
        x, y = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
        h = n_test // 2
        return (x[:h].numpy(), y[:h].numpy(), x[h:n_test].numpy(), y[h:n_test].numpy(),
                f"test images 0-{h - 1} fitted, {h}-{n_test - 1} scored")
    x, y = load_fashion_mnist(cfg.data_path, "train", cfg.image_size)
    n_train = cfg.n_train or len(x)
    if n_train >= len(x):
        raise SystemExit("--protocol validation needs a run trained with --n-train below the training split's size")
    i = np.sort(np.random.default_rng(seed).choice(n_train, min(n_fit, n_train), replace=False))
    return (x[i].numpy(), y[i].numpy(), x[n_train:].numpy(), y[n_train:].numpy(),
            f"{len(i)} of training images 0-{n_train - 1} fitted (seed {seed}), held-out {n_train}-{len(x) - 1} scored")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--n-fit", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", choices=("training", "test-halves", "validation"), default="training")
    ap.add_argument("--cv", action="store_true", help="C by 3-fold cross-validation (default C = 1)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report_machine()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.machine())
    t0 = time.time()
    rt = Runtime(args.model, device="cpu")
    cfg = Config.from_dict(rt.bundle.manifest.training["config"])
    x_fit, y_fit, x, y, what = fit_and_score(cfg, args.protocol, args.n_fit, args.n_test, args.seed)
    mu_fit, _ = rt.encode(x_fit)
    mu, var = rt.encode(x)
    res = probe_baselines(x_fit, y_fit, x, y, mu_fit, mu, var, args.seed, args.cv)
    res["code"] = linear_probe(mu_fit, y_fit, mu, y, args.seed, args.cv)["accuracy"]
    res.update(protocol=args.protocol, cv=args.cv, images=what)
    print(f"{rt.bundle.root.name}: {what}; C {'by 3-fold cross-validation' if args.cv else '= 1'}; {cpu}; "
          f"{time.time() - t0:.0f} s")
    print(f"| probe on | accuracy |\n| --- | --- |\n| the {res['dim']}-d code (posterior means) | {res['code']:.3f} |\n"
          f"| PCA-{res['dim']} of the pixels | {res['pca']:.3f} |\n| raw pixels | {res['pixels']:.3f} |")
    t = res["top_k"]
    print("\n| k | code's k most certain axes | first k principal components |\n| --- | --- | --- |")
    for k, c, p in zip(t["k"], t["code"], t["pca"]):
        print(f"| {k} | {c:.3f} | {p:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
