"""Class keeping of a Fashion-MNIST model, alone: 8 guided samples of each of test images 0-15 (DDPM, 100 steps,
the model's sampling scale, z a posterior sample), the share the project's classifier (train/fid.py, the current
FEATURE_NET_VERSION) puts in the guide's class, with the classifier's accuracy on the test split and on the
guides. It follows train/evaluate.py's protocol (its noise stream differs: this draws only the class-keeping
latents), so a model's figure moves by the protocol's own spread between the two.

    python -m benchmarks.class_keeping RUN_DIR_OR_BUNDLE [--threads 1]

A bundle is rebuilt in PyTorch from its reference weights; a run directory's EMA weights are used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def load(src: Path):
    """(model, cfg, abar as numpy, step) from a bundle directory or a run directory."""
    if (src / "manifest.json").is_file():
        from sami_reference import load_reference
        from sami_rt.bundle import read_bundle
        from train.config import Config

        model, abar = load_reference(read_bundle(src))
        cfg = Config.from_dict(json.loads((src / "manifest.json").read_text())["training"]["config"])
        return model, cfg, abar.numpy(), "bundle"
    from train.loop import load_run

    model, cfg, abar, step = load_run(src)
    return model, cfg, getattr(abar, "numpy", lambda: abar)(), step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="run directory or bundle directory")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from train.data import load_fashion_mnist
    from train.fid import FEATURE_NET_VERSION, fashion_feature_net, generate_samples, predict

    torch.set_num_threads(a.threads)
    model, cfg, abar, step = load(a.source)
    cfg = cfg.replace(data_path="")
    t0 = time.time()
    net, acc = fashion_feature_net(cfg)
    x, y = load_fashion_mnist("", "test", cfg.image_size)
    G, K = 16, 8
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        mu, var = model.encoder(x[:G])
    z = (mu[:, None] + var.sqrt()[:, None] * torch.randn(G, K, cfg.latent_dim, generator=g)).reshape(-1, cfg.latent_dim)
    s = generate_samples(model, cfg, abar, G * K, z, 100, 3)
    labels, guide_pred = y.numpy()[:G], predict(net, x[:G])
    pred = predict(net, s).reshape(G, K)
    print(json.dumps(dict(source=str(a.source), step=step, kl_weight=cfg.kl_weight, scale=cfg.sampling_scale,
                          feature_net=FEATURE_NET_VERSION, net_test_accuracy=round(acc, 4),
                          net_accuracy_on_guides=float((guide_pred == labels).mean()),
                          class_keeping=float((pred == labels[:, None]).mean()),
                          per_guide=(pred == labels[:, None]).mean(1).tolist(), seconds=round(time.time() - t0))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
