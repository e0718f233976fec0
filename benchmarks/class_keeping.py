"""Class keeping of a Fashion-MNIST model, alone: 8 guided samples of each of test images 0-15 (DDPM, 100 steps,
the model's sampling scale, z a posterior sample), the share the project's classifier (train/fid.py, the current
FEATURE_NET_VERSION) puts in the guide's class, with the classifier's accuracy on the test split and on the
guides. It follows train/evaluate.py's protocol (its noise stream differs: this draws only the class-keeping
latents), so a model's figure moves by the protocol's own spread between the two.

    python -m benchmarks.class_keeping RUN_DIR_OR_BUNDLE [--threads 1] [--scale S] [--split test|train] [--first I]
        [--guides G] [--per-guide K] [--steps N] [--interval LO HI] [--knn] [--device cuda] [--data-path DIR]

--first/--guides pick other test images as guides, --split train training images (the split to choose a
guidance scale or a step count on, leaving every test image for reporting); --scale samples at another
guidance scale than the model's, --steps with another number of DDPM steps (default 100, the evaluation's),
--interval with the scale only at noise levels t / (T - 1) in [LO, HI] (1, the exact model, elsewhere; default:
a bundle's interval, a run's every level). --knn adds how much of the class the code holds at all,
linear or not: the accuracy of a 10-nearest-neighbour vote on posterior means (each axis divided by its spread
over the fitting set), fitted on 10,000 training images, scored on test images 0-1,999. Guided samples cannot
keep the class much more often than the code itself tells it.

A bundle is rebuilt in PyTorch from its reference weights; a run directory's EMA weights are used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sami_rt.hardware.cpuinfo import report_machine
from sami_rt.sampling.schedule import FULL_INTERVAL, check_interval


def load(src: Path):
    """(model, cfg, abar as numpy, step, guidance interval) from a bundle directory or a run directory."""
    from export.source import is_bundle, load_bundle_model

    if is_bundle(src):
        model, cfg, abar, manifest = load_bundle_model(src)
        return model, cfg, abar.numpy(), "bundle", manifest.sampling_interval
    from train.loop import load_run

    model, cfg, abar, step = load_run(src)
    return model, cfg, getattr(abar, "numpy", lambda: abar)(), step, FULL_INTERVAL


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="run directory or bundle directory")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale", type=float, help="guidance scale (default: the model's sampling scale)")
    ap.add_argument("--split", choices=("test", "train"), default="test", help="the split the guides come from")
    ap.add_argument("--first", type=int, default=0, help="index of the first guide in that split (default 0)")
    ap.add_argument("--guides", type=int, default=16, help="number of guides (default 16)")
    ap.add_argument("--per-guide", type=int, default=8, help="samples per guide (default 8)")
    ap.add_argument("--steps", type=int, default=100, help="DDPM sampling steps (default 100, the evaluation's)")
    ap.add_argument("--interval", type=float, nargs=2, metavar=("LO", "HI"),
                    help="guide at the scale only at noise levels t / (T - 1) in [LO, HI] (default: a bundle's)")
    ap.add_argument("--knn", action="store_true", help="also the 10-NN class accuracy of posterior means")
    ap.add_argument("--device", default="cpu", help="torch device to sample on (default cpu)")
    ap.add_argument("--data-path", default="", help="Fashion-MNIST directory (default: the Debian package's)")
    a = ap.parse_args(argv)
    report_machine()
    import torch

    from train.data import load_fashion_mnist
    from train.fid import FEATURE_NET_VERSION, fashion_feature_net, generate_samples, predict

    torch.set_num_threads(a.threads)
    model, cfg, abar, step, interval = load(a.source)
    interval = check_interval(interval if a.interval is None else a.interval)
    cfg = cfg.replace(data_path=a.data_path)
    if a.scale is not None:
        cfg = cfg.replace(sampling_scale=a.scale)
    t0 = time.time()
    net, acc = fashion_feature_net(cfg)
    x, y = load_fashion_mnist(a.data_path, a.split, cfg.image_size)
    G, K, i0 = a.guides, a.per_guide, a.first
    x, y = x[i0:i0 + G], y[i0:i0 + G]
    if len(x) < G:
        sys.exit(f"the {a.split} split has {len(x) + i0} images; --first {i0} --guides {G} runs past its end")
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        mu, var = model.encoder(x)
    z = (mu[:, None] + var.sqrt()[:, None] * torch.randn(G, K, cfg.latent_dim, generator=g)).reshape(-1, cfg.latent_dim)
    if not 1 <= a.steps <= cfg.T:
        sys.exit(f"error: --steps must be 1..{cfg.T} (the model's T), got {a.steps}")
    s = generate_samples(model.to(a.device), cfg, abar, G * K, z, a.steps, 3, interval).cpu()
    model.cpu()
    labels, guide_pred = y.numpy()[:G], predict(net, x[:G])
    pred = predict(net, s).reshape(G, K)
    print(json.dumps(dict(source=str(a.source), step=step, kl_weight=cfg.kl_weight, scale=cfg.sampling_scale,
                          interval=list(interval), split=a.split, guides=[i0, i0 + G], samples_per_guide=K,
                          steps=a.steps,
                          feature_net=FEATURE_NET_VERSION, net_test_accuracy=round(acc, 4),
                          net_accuracy_on_guides=float((guide_pred == labels).mean()),
                          class_keeping=float((pred == labels[:, None]).mean()),
                          per_guide=(pred == labels[:, None]).mean(1).tolist(),
                          **({"knn10_code_accuracy": knn_accuracy(model, cfg.image_size)} if a.knn else {}),
                          seconds=round(time.time() - t0))))
    return 0


def knn_accuracy(model, image_size: int, k: int = 10, n_fit: int = 10000, n_test: int = 2000) -> float:
    """Class accuracy of a k-nearest-neighbour vote on posterior means, axes scaled by their spread."""
    import numpy as np
    import torch

    from train.data import load_fashion_mnist

    x_fit, y_fit = load_fashion_mnist("", "train", image_size)
    x_te, y_te = load_fashion_mnist("", "test", image_size)
    with torch.no_grad():
        a = model.encoder(x_fit[:n_fit])[0].double().numpy()
        b = model.encoder(x_te[:n_test])[0].double().numpy()
    y_fit, y_te = y_fit[:n_fit].numpy(), y_te[:n_test].numpy()
    sd = a.std(0)
    a, b = a / sd, b / sd
    d = (b ** 2).sum(1)[:, None] - 2 * b @ a.T + (a ** 2).sum(1)[None]
    nn = np.argsort(d, axis=1)[:, :k]
    pred = np.array([np.bincount(y_fit[row], minlength=10).argmax() for row in nn])
    return float((pred == y_te).mean())


if __name__ == "__main__":
    sys.exit(main())
