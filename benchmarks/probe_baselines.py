"""A shipped bundle's code against the simple baselines, by the evaluation's own probe (issue 30): the linear
probe on the posterior means of the torch-free runtime's encoder, on raw pixels and on PCA of the code's size,
and the top-k curve (the code's k most certain axes against the first k principal components).

    python -m benchmarks.probe_baselines [--model fashion-mnist] [--n-fit 5000] [--n-test 2000] [--seed 0]

The evaluation's protocol (train/natural.py ``labelled_sets``): ``--n-fit`` images drawn (seeded) from the
training split to fit, the first ``--n-test`` images of the test split to score. Prints a table and the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from sami_rt import Runtime
from sami_rt.hardware.cpuinfo import report_machine
from train.config import Config
from train.labelled import linear_probe
from train.natural import labelled_sets, probe_baselines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--n-fit", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report_machine()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.machine())
    t0 = time.time()
    rt = Runtime(args.model, device="cpu")
    cfg = Config.from_dict(rt.bundle.manifest.training["config"])
    x_fit, y_fit, x, y, *_ = labelled_sets(cfg, args.n_fit, args.n_test, args.seed)
    mu_fit, _ = rt.encode(x_fit.numpy())
    mu, var = rt.encode(x.numpy())
    res = probe_baselines(x_fit.numpy(), y_fit, x.numpy(), y, mu_fit, mu, var, args.seed)
    res["code"] = linear_probe(mu_fit, y_fit, mu, y, args.seed)["accuracy"]
    print(f"{rt.bundle.root.name}: {args.n_fit} training images fitted (seed {args.seed}), test images 0-{args.n_test - 1} "
          f"scored; {cpu}; {time.time() - t0:.0f} s")
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
