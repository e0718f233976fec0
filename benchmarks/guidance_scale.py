"""Conditioned variability and MSE to the guide against the guidance scale, on guides the evaluation never uses.

    python -m benchmarks.guidance_scale RUN_DIR [--scales 1,2,3,4,5] [--threads N]

The evaluation's generation figures (train/evaluate.py: 8 guides, 16 DDPM samples each, 100 steps) at each
scale, with guides drawn from a seed of their own (not the evaluation's held-out set, nor the regressors'), so
that choosing a run's ``sampling_scale`` from this table does not tune it on the figures it is judged by (for
data sets without a generator, the held-out images after the evaluation's 8 guides). On Fashion-MNIST also the
class keeping (train/fid.py's classifier) of 4 guided samples of each of 32 test images (5,000-5,031) that no
evaluation figure uses.
Write the choice into the run with ``python train/run.py --resume RUN_DIR --sampling-scale S --eval-protocol
full`` (training is untouched: the scale is a sampling setting; the run is evaluated again, with the full
protocol, and exported with it as its default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sami_rt.hardware.cpuinfo import report_machine

SELECTION_SEED_OFFSET = 3_000_017  # neither evaluate's held-out offset nor its FIT_SEED_OFFSET


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--scales", default="1,2,3,4,5", help="comma-separated guidance scales")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    report_machine()
    import torch

    from train.data import eval_set
    from train.evaluate import generation_figures
    from train.loop import load_run

    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg, abar, step = load_run(args.run_dir)
    x, _ = eval_set(cfg, cfg.eval_n + 8, SELECTION_SEED_OFFSET)
    if cfg.dataset != "disks":  # other data sets' held-out images are one fixed list: skip the evaluation's 8 guides
        x = x[8:]
    print(f"{args.run_dir} at step {step}, EMA weights, guides from seed offset {SELECTION_SEED_OFFSET}")
    print("| scale | cond. variability / test set | the same, z = posterior mean | MSE to guide: cond / uncond |")
    print("| --- | --- | --- | --- |")
    keep = None
    if cfg.dataset == "fashion-mnist":
        from train.data import load_fashion_mnist
        from train.fid import class_keeping, fashion_feature_net, generate_samples

        net, _ = fashion_feature_net(cfg)
        xg, yg = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
        xg, yg = xg[5000:5032], yg.numpy()[5000:5032]
        with torch.no_grad():
            mu, var = model.encoder(xg)
        zg = (mu[:, None] + var.sqrt()[:, None] * torch.randn(32, 4, cfg.latent_dim,
                                                                generator=torch.Generator().manual_seed(5))).reshape(-1, cfg.latent_dim)

        def keep(s):
            return class_keeping(net, generate_samples(model, cfg.replace(sampling_scale=s), abar.numpy(), len(zg), zg, 100, 6), yg)

    for s in (float(v) for v in args.scales.split(",")):
        r = generation_figures(model, cfg, abar.numpy(), x, scale=s, exact=False)
        extra = "" if keep is None else f" class keeping {keep(s):.3f}"
        print(f"| {s:g} | {r['cond_variability_ratio']:.3f} | {r['cond_mean_variability_ratio']:.3f} | "
              f"{r['cond_mse_to_guide']:.4f} / {r['uncond_mse_to_guide']:.4f} |{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
