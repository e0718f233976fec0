"""Fashion-MNIST runs side by side within a wall-clock budget, each code probed against raw pixels and PCA on a
validation split and on the test split (issue 30: choose on validation, report on test).

    python -m benchmarks.fashion_sweep --out DIR --minutes 5 [--device cuda] [--data-path DIR] \\
        --run "A:--kl-weight 0.01" --run "B:--kl-weight 0.01 --unet-channels 64 --batch 128"

Each ``--run NAME:OVERRIDES`` is ``train/run.py --config fashion-mnist --no-eval OVERRIDES`` in a process of
its own, all at once. Their number of steps is ``--steps``, or, by default, set so that they end within
``--minutes``: a first ``--rate-steps`` run of the last configuration, alone, measures the rate (start-up
included). The KL annealing and learning-rate schedule follow the steps, so every run is a complete run of its
length, unless ``--train-minutes M`` stops the runs still training after M minutes (each is then probed at its
last checkpoint, every ``--ckpt-every`` steps, and its row says so).

Probe (train/natural.py ``probe_baselines``, the evaluation's own): the EMA encoder's posterior means of
``--n-fit`` training images (seeded draw) fit a logistic regression; it is scored on ``--n-val`` other
training images (validation: the split to choose on) and on the first ``--n-test`` test images (report only).
Runs given ``--n-train N`` never train on training images N and up: the fit comes from the first N and the
validation images from the rest. The same probe on raw pixels and on PCA of the code's size sits beside each.
``--keeping SCALE:STEPS ...`` adds class keeping on the first ``--keeping-guides`` validation images
(``--keeping-per-guide`` guided DDPM samples each, the project's classifier). Writes DIR/sweep.json (after each
run's probe) and prints a table; every run's log is DIR/NAME/train.log.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from functools import cache, partial
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine
from train.io import write_json

ROOT = Path(__file__).resolve().parent.parent


def launch(name: str, overrides: list[str], out: Path, steps: int, args) -> subprocess.Popen:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "train" / "run.py"), "--config", "fashion-mnist", "--no-eval", "--out", str(d),
           "--steps", str(steps), "--device", args.device, "--sample-every", "0",
           "--ckpt-every", str(args.ckpt_every or max(steps // 4, 1)),
           "--seed", str(args.seed), *(["--data-path", args.data_path] if args.data_path else []), *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(d / "train.log", "w")
    log.write("$ " + shlex.join(cmd) + "\n")
    log.flush()
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def probe(run_dir: Path, args, baselines: dict) -> dict:
    """The run's code probed on both splits; the pixel and PCA rows (the same for every run) are computed once,
    into ``baselines``, with the first run probed."""
    from train.data import load_fashion_mnist
    from train.evaluate import load_model
    from train.labelled import linear_probe
    from train.loop import pick_device
    from train.natural import TOP_K, probe_baselines
    from train.nets import encode

    model, cfg, _, step = load_model(run_dir)
    dev = pick_device(args.device)
    model = model.to(dev).eval()
    x_tr, y_tr = load_fashion_mnist(cfg.data_path, "train", cfg.image_size)
    x_te, y_te = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
    fit, val = split_indices(len(x_tr), cfg.n_train, args)
    enc = partial(encode, model, batch=1000)

    mu_fit, _ = enc(x_tr[fit])
    out = {"step": int(step), "config": {k: v for k, v in cfg.to_dict().items() if not isinstance(v, (list, dict))}}
    for split, x, y in (("val", x_tr[val], y_tr.numpy()[val]), ("test", x_te[: args.n_test], y_te.numpy()[: args.n_test])):
        mu, var = enc(x)
        if split not in baselines:
            baselines[split] = probe_baselines(x_tr[fit].numpy(), y_tr.numpy()[fit], x.numpy(), y, mu_fit, mu, var,
                                               args.seed)
        D, order = mu.shape[1], np.argsort(var.mean(0))
        ks = sorted({k for k in TOP_K if k < D} | {D})
        out[split] = {"code": linear_probe(mu_fit, y_tr.numpy()[fit], mu, y, args.seed)["accuracy"],
                      "top_k": {"k": ks, "code": [linear_probe(mu_fit[:, order[:k]], y_tr.numpy()[fit], mu[:, order[:k]],
                                                               y, args.seed)["accuracy"] for k in ks]},
                      "median_posterior_var": float(np.median(var))}
    if args.keeping:
        out["val"]["class_keeping"] = keeping(model, cfg, x_tr[val], y_tr.numpy()[val], dev, args)
    return out


def split_indices(n: int, n_train: int, args) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices into the training split: a run trained on the first ``n_train`` images (> 0) is
    fitted on a seeded draw from them and validated on a draw from the images it never saw; a run trained
    on all of them, on two disjoint draws from the whole split."""
    rng = np.random.default_rng(args.seed)
    if n_train:
        if n - n_train < args.n_val:
            raise SystemExit(f"--n-val {args.n_val} needs that many held-out training images; the runs leave "
                             f"{n - n_train} (--n-train {n_train})")
        return (np.sort(rng.permutation(n_train)[: args.n_fit]),
                np.sort(n_train + rng.permutation(n - n_train)[: args.n_val]))
    order = rng.permutation(n)
    return np.sort(order[: args.n_fit]), np.sort(order[args.n_fit : args.n_fit + args.n_val])


def keeping(model, cfg, x_val, y_val, dev, args) -> dict:
    """Class keeping on the first ``--keeping-guides`` validation images, ``--keeping-per-guide`` guided
    samples each (z a posterior sample), at each ``SCALE:STEPS`` of ``--keeping`` (DDPM), judged by the
    project's classifier (train/fid.py)."""
    import torch

    from sami_rt.sampling.schedule import make_abar
    from train.fid import generate_samples, predict

    abar = make_abar(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)
    net, acc = classifier(cfg.data_path, cfg.image_size, str(dev))
    G, K = args.keeping_guides, args.keeping_per_guide
    x, y = x_val[:G].to(dev), y_val[:G]
    with torch.no_grad():
        mu, var = model.encoder(x)
    g = torch.Generator().manual_seed(7)
    z = (mu[:, None] + var.sqrt()[:, None] * torch.randn(G, K, cfg.latent_dim, generator=g).to(dev)).reshape(G * K, -1)
    res = {"guides": G, "per_guide": K, "classifier_test_accuracy": round(acc, 4),
           "classifier_on_guides": float((predict(net, x.cpu()) == y).mean())}
    for item in args.keeping:
        scale, steps = item.split(":")
        s = generate_samples(model, cfg.replace(sampling_scale=float(scale)), abar, G * K, z, int(steps), 3)
        res[item] = float((predict(net, s.cpu()).reshape(G, K) == y[:, None]).mean())
    return res


@cache
def classifier(data_path: str, image_size: int, device: str):
    """The project's classifier and its test accuracy (train/fid.py), once per sweep."""
    from train.config import get_config
    from train.fid import fashion_feature_net

    return fashion_feature_net(get_config("fashion-mnist").replace(data_path=data_path, image_size=image_size),
                               device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--run", action="append", required=True, help="NAME:train/run.py overrides")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of the runs (all at once)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-path", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=0, help="steps of every run (0: from the measured rate)")
    ap.add_argument("--train-minutes", type=float, default=0.0,
                    help="stop runs still training after this long (each is probed at its last checkpoint; 0 = never)")
    ap.add_argument("--ckpt-every", type=int, default=0, help="checkpoint interval (0: a quarter of the steps)")
    ap.add_argument("--n-fit", type=int, default=5000)
    ap.add_argument("--n-val", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--keeping", nargs="*", default=[], metavar="SCALE:STEPS",
                    help="class keeping on validation guides at these guidance scales and DDPM steps")
    ap.add_argument("--keeping-guides", type=int, default=100)
    ap.add_argument("--keeping-per-guide", type=int, default=4)
    args = ap.parse_args()
    report_machine()
    runs = [(r.split(":", 1)[0], shlex.split(r.split(":", 1)[1]) if ":" in r else []) for r in args.run]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    steps = args.steps
    if not steps:  # the rate of the slowest-looking configuration, alone, then a margin for running together
        name, ov = runs[-1]
        t = time.time()
        p = launch(f"rate-{name}", ov, args.out, args.rate_steps, args)
        p.wait()
        rate = args.rate_steps / (time.time() - t)  # start-up included: a conservative rate
        steps = max(args.rate_steps, int(rate * (args.minutes * 60 - (time.time() - t0)) / max(1.0, 0.8 * len(runs))))
        print(f"rate {rate:.1f} steps/s alone ({name}, start-up included): {steps} steps each", flush=True)
    procs = {name: launch(name, ov, args.out, steps, args) for name, ov in runs}
    t_launch, stopped = time.time(), set()
    while any(p.poll() is None for p in procs.values()):
        if args.train_minutes and time.time() - t_launch > args.train_minutes * 60:
            for name, p in procs.items():  # the budget is spent: each run keeps its last checkpoint
                if p.poll() is None:
                    p.terminate()
                    stopped.add(name)
            for p in procs.values():
                p.wait()
            break
        time.sleep(1)
    for name, p in procs.items():
        print(f"{name}: {'stopped at the time limit' if name in stopped else f'exit {p.returncode}'} after "
              f"{time.time() - t0:.0f} s", flush=True)
    res = {"steps": steps, "runs": {}, "baselines": {}}
    for name, ov in runs:
        try:
            res["runs"][name] = {"overrides": ov, "stopped_early": name in stopped,
                                 **probe(args.out / name, args, res["baselines"])}
        except Exception as e:  # a failed run is a row too
            res["runs"][name] = {"overrides": ov, "error": f"{type(e).__name__}: {e}"}
        print(f"{name}: probed after {time.time() - t0:.0f} s", flush=True)
        write_json(args.out / "sweep.json", res)  # what is probed so far survives a later failure or time limit
    print(f"\n{steps} steps each; probe fit on {args.n_fit} training images, scored on {args.n_val} other training "
          f"images (val) and test images 0-{args.n_test - 1} (test)")
    print("| run | overrides | val: code | val: PCA | val: pixels | test: code | test: PCA | test: pixels | "
          "test top-1/2/4/8 code vs PCA |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    bv, bt = res["baselines"].get("val", {}), res["baselines"].get("test", {})
    for name, r in res["runs"].items():
        if "error" in r:
            print(f"| {name} | {' '.join(r['overrides'])} | {r['error']} |")
            continue
        v, t = r["val"], r["test"]
        top = ", ".join(f"{c:.2f}/{p:.2f}" for k, c, p in zip(t["top_k"]["k"], t["top_k"]["code"], bt["top_k"]["pca"])
                        if k in (1, 2, 4, 8))
        print(f"| {name} | {' '.join(r['overrides'])} | {v['code']:.3f} | {bv['pca']:.3f} | {bv['pixels']:.3f} | "
              f"{t['code']:.3f} | {bt['pca']:.3f} | {bt['pixels']:.3f} | {top} |")


if __name__ == "__main__":
    main()
