"""Evaluate a run: ``python train/evaluate.py RUN_DIR [--ckpt FILE] [--raw]``, or any model's codes:
``python train/evaluate.py --metrics CODES.npz [--json OUT]`` (disentanglement_lib's metrics on arrays; the
layout is in ``load_codes``).

Writes RUN_DIR/eval.json, posterior_variance.csv and posterior_variance.png, and prints a summary:
- factor prediction from posterior means of held-out images (k-NN, linear and single-axis R^2) and
  disentanglement_lib's MIG, DCI, SAP, Modularity and FactorVAE score, the earlier variants under
  ``legacy`` (data sets with ground-truth factors; train/metrics.py);
- the paper's variability (mean squared distance of samples from their own mean, per pixel) of the
  test set and of samples guided by one image, and the MSE from guide to guided and to unconditional
  samples, at the run's ``sampling_scale`` (the scale its bundle samples with by default) and, where that
  is not 1, also at s = 1 (the exact model) under ``exact``;
- the posterior variance of every latent dimension as a function of the noise level (paper Fig. 3D);
- on labelled data (Fashion-MNIST classes, CelebA attributes): the paper's natural-image analyses
  (train/natural.py: probes, participation ratio, TAD, variance spectra, traversal, global axes) and FID and
  class keeping of samples (train/fid.py), each with its figure;
- the guidance gain per noise level: the denoising error of the guided estimate (z = the clean image's
  posterior mean) over that of the denoiser alone, on held-out images. An exact model scores what z leaves
  undetermined (for a linear-Gaussian model (sigma^2 / (1 - abar + sigma^2))^2, sigma^2 the posterior
  variance: near 0 when z pins the image down); where it stays near 1 the latent does not steer sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


import numpy as np
import torch

from train.data import DISK_FACTORS, eval_set
from train.eval_protocol import PROTOCOLS, QUICK, Stages, protocol_of
from train.io import atomic_path, write_json, write_text
from train.codes import CodesError, metrics_on_codes
from train.metrics import all_metrics
from train.nets import encode  # noqa: F401  (re-exported for benchmarks)
from train.sampling import sample

METRIC_KEYS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "modularity", "factor_vae")

FIT_SEED_OFFSET = 2_000_029  # the set the regressors are fitted on (held-out data uses the default offset)


def load_model(run_dir: Path, ckpt: Path | None = None, ema: bool = True):
    from train.loop import load_run

    model, cfg, abar, step = load_run(ckpt or run_dir, ema)
    return model, cfg, abar.numpy(), step


@torch.no_grad()
def variability(x: torch.Tensor) -> float:
    """Mean squared distance of images from their own mean, per pixel."""
    return float(((x - x.mean(0, keepdim=True)) ** 2).mean())


def generation_figures(model, cfg, abar, x_test, n_guides=8, per_guide=16, steps=100, seed=0,
                       scale: float | None = None, exact: bool = True) -> dict:
    """Guided (posterior sample and posterior mean as z) and unconditional samples of the first n_guides test
    images, at guidance scale ``scale`` (default the run's sampling_scale) and, with ``exact`` where that is
    not 1, the guided ones again at 1 (``exact``). Every setting draws from the same seeded noise."""
    scale = float(cfg.sampling_scale if scale is None else scale)
    guides = x_test[:n_guides]
    mu, var = model.encoder(guides)
    shape = (n_guides * per_guide, cfg.channels, cfg.image_size, cfg.image_size)
    g = torch.Generator().manual_seed(seed)
    z_post = (mu[:, None] + var.sqrt()[:, None] * torch.randn(n_guides, per_guide, cfg.latent_dim, generator=g))
    z_mean = mu[:, None].expand(n_guides, per_guide, cfg.latent_dim)
    rep = guides[:, None].expand(n_guides, per_guide, *guides.shape[1:])
    tv = variability(x_test)

    def figures(settings, s_scale):
        out = {}
        for name, z in settings:
            zz = None if z is None else z.reshape(-1, cfg.latent_dim)
            s = sample(model, abar, shape, z=zz, steps=min(steps, cfg.T), scale=s_scale,
                       generator=torch.Generator().manual_seed(seed + 1)).reshape(n_guides, per_guide, *shape[1:])
            out[f"{name}_variability"] = float(np.mean([variability(s[i]) for i in range(n_guides)]))
            out[f"{name}_mse_to_guide"] = float(((s - rep) ** 2).mean())
            if z is not None:
                out[f"{name}_variability_ratio"] = out[f"{name}_variability"] / tv
        return out

    guided = (("cond", z_post), ("cond_mean", z_mean))
    out = {"test_variability": tv, "scale": scale, **figures(guided + (("uncond", None),), scale)}
    out["mse_ratio_cond_uncond"] = out["cond_mse_to_guide"] / out["uncond_mse_to_guide"]
    if exact and scale != 1.0:
        out["exact"] = {"scale": 1.0, **figures(guided, 1.0)}
    return out


@torch.no_grad()
def posterior_variance_curve(model, abar, x, levels: int = 20, seed: int = 0):
    """Mean posterior variance per latent dimension of q(z | x_t) at ``levels`` noise levels."""
    T = len(abar)
    ts = np.unique(np.round(np.linspace(0, T - 1, levels)).astype(int))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in ts:
        a = float(abar[t])
        x_t = a**0.5 * x + (1 - a) ** 0.5 * torch.randn(x.shape, generator=g)
        _, var = model.encoder(x_t)
        rows.append([int(t), a, *var.mean(0).tolist()])
    return np.array(rows)


def guidance_gain_curve(model, abar, x, levels: int = 10, seed: int = 0) -> list[dict]:
    """Per noise level: summed squared eps error per image of the denoiser alone and of the guided estimate
    with z = the posterior mean of the clean image, and their ratio (guided / alone)."""
    from sami_reference.guidance import guided_eps

    T = len(abar)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mu, _ = model.encoder(x)
    rows = []
    for t in np.unique(np.minimum(np.round(np.linspace(T // levels, T - 1, levels)), T - 1).astype(int)):
        a = float(abar[t])
        eps = torch.randn(x.shape, generator=g)
        x_t = a**0.5 * x + (1 - a) ** 0.5 * eps
        tt = torch.full((len(x),), int(t))
        with torch.no_grad():
            alone = model.denoiser(x_t, tt)
        guided = guided_eps(model.denoiser, model.encoder, x_t, tt, mu, torch.full((len(x),), (1 - a) ** 0.5),
                            1.0).detach()
        e0 = float(((eps - alone) ** 2).flatten(1).sum(1).mean())
        e1 = float(((eps - guided) ** 2).flatten(1).sum(1).mean())
        rows.append({"t": int(t), "snr": a / (1 - a), "error_alone": e0, "error_guided": e1, "ratio": e1 / e0})
    return rows


def write_curve(run_dir: Path, curve: np.ndarray) -> None:
    D = curve.shape[1] - 2
    header = "t,abar," + ",".join(f"var_{d}" for d in range(D))
    lines = [header] + [",".join([str(int(r[0])), f"{r[1]:.6g}"] + [f"{v:.6g}" for v in r[2:]]) for r in curve]
    write_text(run_dir / "posterior_variance.csv", "\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for d in range(min(D, 16)):
        ax.plot(curve[:, 0], curve[:, 2 + d], label=f"z{d}" if D <= 8 else None)
    ax.set_yscale("log")
    ax.set_xlabel("noise level t")
    ax.set_ylabel("mean posterior variance")
    ax.set_title("q(z | x_t): variance per latent dimension")
    if D <= 8:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(run_dir / "posterior_variance.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def evaluate_run(run_dir, ckpt=None, n_test: int | None = None, n_fit: int | None = None, steps: int | None = None,
                 ema: bool = True, generate: bool = True, scale: float | None = None,
                 interp_pairs: int | None = None, fid_n: int = 1000, inception: str | None = None,
                 protocol: str = "full", log=None, threads: int | None = None) -> dict:
    """``protocol`` "quick" caps the sizes at ``QUICK`` (explicit arguments still apply under the caps);
    ``log`` receives one line per stage (default: stderr); ``threads`` None leaves torch's thread count as
    it is (a training run has set it), 0 measures it (``eval_threads``), N sets it."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected quick or full")
    run_dir = Path(run_dir)
    model, cfg, abar, step = load_model(run_dir, Path(ckpt) if ckpt else None, ema)
    n_test = n_test or cfg.eval_n
    steps = cfg.eval_steps if steps is None else steps
    if interp_pairs is None:  # 50 for the default 1,000 held-out images; fewer for a quick evaluation
        interp_pairs = min(50, max(1, n_test // 20))
    if protocol == "quick":
        n_test, steps = min(n_test, QUICK["n_test"]), min(steps, QUICK["steps"])
        interp_pairs, fid_n = min(interp_pairs, QUICK["interp_pairs"]), min(fid_n, QUICK["fid_n"])
    n_fit = n_fit or min(2000, 2 * n_test)  # the regressors' and disentanglement_lib's train set
    stages = Stages(log)
    try:
        if threads is not None:
            note = eval_threads(model, cfg, threads)
            if note:
                stages.log(note)
        x_test, f_test = eval_set(cfg, n_test)
        stages.log(f"evaluation ({protocol} protocol): {len(x_test)} held-out images, {steps} sampling steps"
                   + (f"; python train/evaluate.py {run_dir} runs the full one" if protocol == "quick" else ""))
        res: dict = {"step": step, "weights": "ema" if ema else "raw", "n_test": len(x_test), "protocol": protocol,
                     "steps": steps}
        stages.begin("encoding and factor metrics")
        mu, var = encode(model, x_test)
        res["posterior"] = {"mean_std": mu.std(0).tolist(), "var_mean": var.mean(0).tolist()}
        if f_test is not None:
            x_fit, f_fit = eval_set(cfg, n_fit, FIT_SEED_OFFSET)
            mu_fit, _ = encode(model, x_fit)
            from train.dsprites import DSPRITES_FACTORS

            names = {"disks": DISK_FACTORS, "dsprites": DSPRITES_FACTORS}.get(
                cfg.dataset, tuple(f"f{j}" for j in range(f_test.shape[1])))
            res["factors"] = all_metrics(mu_fit, f_fit.numpy(), mu, f_test.numpy(), names)
            corr = np.corrcoef(np.c_[mu, f_test.numpy()].T)[: mu.shape[1], mu.shape[1] :]
            res["factors"]["correlation"] = corr.tolist()
            stages.done(f"factor metrics ({n_fit} fitted, {n_test} scored)")
            if cfg.dataset == "disks":
                from train.factor_figures import axis_r2_table, interpolation_check, latent_grids

                stages.begin("latent grids")
                table = axis_r2_table(mu, f_test.numpy(), names, run_dir / "axis_r2.csv")
                res["factors"].update(factor_axes=table["factor_axes"], factor_axis_r2=table["factor_axis_r2"])
                res["latent_grids"] = latent_grids(model, cfg, table["factor_axes"], run_dir)
                stages.done("latent grids")
                if generate and interp_pairs > 0 and cfg.model == "sami":
                    stages.begin(f"interpolation check ({interp_pairs} pairs)")
                    res["interpolation"] = interpolation_check(model, cfg, abar, run_dir, pairs=interp_pairs,
                                                               steps=min(50, steps))
                    stages.done(f"interpolation check ({interp_pairs} pairs)")
                    from train.disk_checks import evaluate_disks  # fold, decode-from-mean, lines (issue 29)
                    res["disk_checks"] = evaluate_disks(model, cfg, abar, run_dir, interp_pairs, steps, scale, stages)
        from train.natural import labelled_analyses

        cfg_s = cfg if scale is None else cfg.replace(sampling_scale=float(scale))  # the figures' guidance scale
        lab_n = (n_fit, n_test) if protocol == "quick" else (max(n_fit, 5000), max(n_test, 2000))
        stages.begin("labelled analyses")
        labels = labelled_analyses(model, cfg_s, abar, run_dir, n_fit=lab_n[0], n_test=lab_n[1], generate=generate,
                                   steps=min(50, steps), seed=0, progress=stages.log)
        if labels is not None:
            res["labels"] = labels
            stages.done("labelled analyses")
            if generate and cfg.dataset == "fashion-mnist" and fid_n > 0:
                from train.fid import sample_quality

                stages.begin(f"FID and class keeping ({fid_n} samples)")
                res["sample_quality"] = sample_quality(model, cfg_s, abar, run_dir, n=fid_n, steps=steps,
                                                       inception=inception, progress=stages.log)
                stages.done(f"FID and class keeping ({fid_n} samples)")
        if cfg.model != "sami":  # a baseline has no diffusion decoder: the SAMI-only figures are skipped
            res["model"] = cfg.model
        else:
            if generate:
                stages.begin("generation figures")
                res["generation"] = generation_figures(model, cfg, abar, x_test, steps=steps, scale=scale)
                stages.done("generation figures")
            stages.begin("posterior variance and guidance gain curves")
            curve = posterior_variance_curve(model, abar, x_test[:256])
            write_curve(run_dir, curve)
            res["guidance_gain"] = guidance_gain_curve(model, abar, x_test[:128])
            stages.done("posterior variance and guidance gain curves")
        res["summary"] = summarise(res)
        name = "eval" if ema else "eval_raw"
        if "generation" in res and res["generation"]["scale"] != cfg.sampling_scale:  # eval.json (what export copies) keeps the run's own scale
            name += f"_scale_{res['generation']['scale']:g}"
        if protocol == "quick" and protocol_of(run_dir / f"{name}.json") == "full":
            name += "_quick"  # a full evaluation (what export copies) is never replaced by a quick one
        write_json(run_dir / f"{name}.json", res)
        stages.log(f"evaluation written to {run_dir / (name + '.json')} in {stages.total():.0f} s")
        return res
    finally:
        stages.close()


def eval_threads(model, cfg, threads: int) -> str | None:
    """Set torch's thread count for an evaluation: ``threads`` where given, else (unless OMP_NUM_THREADS
    fixes it) the faster of one thread and torch's default on the evaluation's typical work, a guided step
    on a batch of 64 (``train.threads``). The line saying which, or None."""
    from train.threads import choose, pinned

    if threads:
        torch.set_num_threads(threads)
        return f"threads: {threads}"
    if pinned():
        return None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, cfg.T, (64,), generator=g)

    def probe():
        xg = x.clone().requires_grad_(True)
        if cfg.model == "sami":
            with torch.no_grad():
                model.denoiser(x, t)
        mu, _ = model.encoder(xg)
        torch.autograd.grad(mu.sum(), xg)

    n, line = choose(probe, 10 ** 9, "guided step at batch 64")
    torch.set_num_threads(n)
    return line


def summarise(res: dict) -> dict:
    s = {"step": res["step"], "protocol": res.get("protocol", "full")}
    if "factors" in res:
        f = res["factors"]
        s["knn_r2"] = {k: round(v, 3) for k, v in f["knn_r2"].items()}
        s["linear_r2"] = {k: round(v, 3) for k, v in f["linear_r2"].items()}
        s.update({k: round(f[k], 3) for k in METRIC_KEYS})
        if "factor_axis_r2" in f:
            s["factor_axis_r2"] = {k: round(v, 3) for k, v in f["factor_axis_r2"].items()}
    if "labels" in res:
        lab = res["labels"]
        if "probe_accuracy" in lab:
            s["probe_accuracy"] = round(lab["probe_accuracy"], 3)
        if "probe_baselines" in lab:  # the same probe on raw pixels and on PCA of the code's size
            b = lab["probe_baselines"]
            s["probe_pixels"], s[f"probe_pca_{b['dim']}"] = round(b["pixels"], 3), round(b["pca"], 3)
            s["probe_top_k"] = {f"k={k}": [round(c, 3), round(p, 3)]  # [code axes, principal components]
                                for k, c, p in zip(b["top_k"]["k"], b["top_k"]["code"], b["top_k"]["pca"])}
        s.update(tad=round(lab["tad"], 3), captured=lab["captured"],
                 participation_ratio=round(float(np.mean(lab["participation_ratio"])), 2))
        if "global_axes" in lab:
            s["global_axes_top"] = lab["global_axes"]["ranking"][:3]
    if "sample_quality" in res:
        q = res["sample_quality"]
        s["fid_fashion_features"] = {k: round(v, 2) for k, v in q["fid_fashion_features"].items()}
        s["class_keeping"] = round(q["class_keeping"], 3)
    if "posterior" in res:
        s["mean_std"] = [round(v, 3) for v in res["posterior"]["mean_std"]]
    if "interpolation" in res:
        s["interpolation_passed"] = f"{res['interpolation']['passed']}/{res['interpolation']['pairs']}"
    if "disk_checks" in res:
        s.update(res["disk_checks"])
    if "guidance_gain" in res:
        s["guidance_gain"] = {r["t"]: round(r["ratio"], 3) for r in res["guidance_gain"]}
    if "generation" in res:
        g = res["generation"]
        s.update(sampling_scale=g.get("scale", 1.0), cond_variability_ratio=round(g["cond_variability_ratio"], 3),
                 cond_mean_variability_ratio=round(g["cond_mean_variability_ratio"], 3),
                 mse_cond=round(g["cond_mse_to_guide"], 4), mse_uncond=round(g["uncond_mse_to_guide"], 4))
        if "exact" in g:
            s.update(cond_variability_ratio_scale_1=round(g["exact"]["cond_variability_ratio"], 3),
                     mse_cond_scale_1=round(g["exact"]["cond_mse_to_guide"], 4))
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, nargs="?", help="run directory (or --metrics)")
    ap.add_argument("--metrics", type=Path, metavar="CODES.npz",
                    help="score the arrays of CODES.npz instead of a run (codes_train, factors_train, codes_test, "
                    "factors_test, optional attributes) and print one JSON object")
    ap.add_argument("--json", type=Path, metavar="OUT", help="with --metrics: also write the JSON object to OUT")
    ap.add_argument("--seed", type=int, default=0, help="seed of the randomised estimators (default 0)")
    ap.add_argument("--ckpt", type=Path, help="checkpoint file (default RUN_DIR/checkpoint.pt)")
    ap.add_argument("--raw", action="store_true", help="evaluate the raw weights instead of the EMA")
    ap.add_argument("--n-test", type=int, help="held-out images (default: the run's eval_n)")
    ap.add_argument("--steps", type=int, default=None,
                    help="sampling steps for the generation figures (default: the run's eval_steps, 100 unless set)")
    ap.add_argument("--no-generate", action="store_true", help="skip the generation figures (faster)")
    ap.add_argument("--quick", action="store_true", help="the quick protocol of the end of a training run: at most "
                    f"{QUICK['n_test']} held-out images, {QUICK['steps']} sampling steps, {QUICK['interp_pairs']} "
                    f"interpolation pairs, {QUICK['fid_n']} FID samples")
    ap.add_argument("--interp-pairs", type=int, help="disk pairs of the interpolation check (0 = skip; default: "
                    "min(50, held-out images / 20))")
    ap.add_argument("--scale", type=float, help="guidance scale of the generation figures (default: the run's "
                    "sampling_scale; figures at 1 are added when it is not 1); another scale than the run's writes "
                    "eval_scale_S.json, so that eval.json, which export copies, stays at the run's own")
    ap.add_argument("--fid-n", type=int, default=1000, help="labelled data: samples per FID (0 = skip FID and class "
                    "keeping; default 1000)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default 0: OMP_NUM_THREADS where set, "
                    "else the faster of 1 and torch's default, measured at the start)")
    ap.add_argument("--inception", metavar="FILE", help="a local TorchScript FID Inception network "
                    "(inception-2015-12-05.pt): adds the standard Inception FID")
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads < 0:
        ap.error(f"--threads must be 0 (measured) or more, got {args.threads}")
    if args.metrics is not None:
        try:
            res = metrics_on_codes(args.metrics, args.seed)
        except CodesError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        text = json.dumps(res, indent=2)
        if args.json:
            write_text(args.json, text + "\n")
        print(text)
        return 0
    if args.run_dir is None:
        ap.error("give a run directory or --metrics CODES.npz")
    if not (args.run_dir / "config.json").is_file():
        ap.error(f"{args.run_dir} is not a run directory (no config.json)")
    if args.inception and not Path(args.inception).is_file():
        ap.error(f"--inception {args.inception} not found (a TorchScript inception-2015-12-05.pt)")
    torch.manual_seed(0)
    res = evaluate_run(args.run_dir, args.ckpt, args.n_test, steps=args.steps, ema=not args.raw,
                       generate=not args.no_generate, scale=args.scale, interp_pairs=args.interp_pairs, fid_n=args.fid_n,
                       inception=args.inception, protocol="quick" if args.quick else "full", threads=args.threads)
    print(json.dumps(res["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
