"""The paper's natural-image analyses (its CelebA section) on a labelled data set: Fashion-MNIST's 10 classes as
one-vs-rest attributes, or CelebA's 40 attributes. ``labelled_analyses`` writes, beside eval.json:

- TAD and the captured attributes; linear-probe class accuracy; per attribute, the one-vs-rest probe's
  balanced accuracy and the participation ratio of its weights (train/labelled.py): ``probes.png``;
- per-image posterior-variance spectra, the variances of each image's axes in ascending order (Fig. 3C):
  ``variance_spectra.csv`` and ``.png``;
- a traversal along each of a few test images' lowest-variance axes (Fig. 3E): ``traversal.png``;
- the global-axis measure of appendix A.8 for every axis (``global_axes``; docs/design.md section 5 derives it), as
  ``global_axes.csv`` and a figure of the top axes applied to several images, ``global_axes.png``;
- FID and class keeping of samples (train/fid.py), when the run generates.

Offsets along an axis are in units of the code's spread (the standard deviation of the test set's posterior
means on that axis), so that one unit moves a code as far as the data set's own variation does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from train.io import atomic_path, write_text
from train.labelled import FASHION_CLASSES, attribute_probes, linear_probe, one_vs_rest
from train.metrics import tad

HIGH_NOISE_ABAR = 0.1  # the "high noise" of the global-axis measure: signal-to-noise ratio 1/9


def labelled_sets(cfg, n_fit: int, n_test: int, seed: int = 0):
    """(x_fit, labels_fit, x_test, labels_test, attribute names, attrs_fit, attrs_test) or None when the data
    set has no labels. Fashion-MNIST: the fit set is drawn (seeded) from the training split, the test set is
    the start of the test split; labels are the classes and attributes their one-vs-rest indicators."""
    if cfg.dataset == "fashion-mnist":
        from train.data import load_fashion_mnist

        x_tr, y_tr = load_fashion_mnist(cfg.data_path, "train", cfg.image_size)
        x_te, y_te = load_fashion_mnist(cfg.data_path, "test", cfg.image_size)
        i = np.sort(np.random.default_rng(seed).choice(len(x_tr), min(n_fit, len(x_tr)), replace=False))
        y_fit, y_test = y_tr.numpy()[i], y_te.numpy()[:n_test]
        return (x_tr[i], y_fit, x_te[:n_test], y_test, list(FASHION_CLASSES), one_vs_rest(y_fit, 10),
                one_vs_rest(y_test, 10))
    if cfg.dataset == "celeba":
        from train.data import CelebA

        tr, te = CelebA(cfg.data_path, cfg.image_spec(), "train"), CelebA(cfg.data_path, cfg.image_spec(), "test")
        n_fit, n_test = min(n_fit, len(tr)), min(n_test, len(te))
        x_fit = torch.stack([tr[k] for k in range(n_fit)])
        x_test = torch.stack([te[k] for k in range(n_test)])
        a_fit, a_test = tr.factors[:n_fit].numpy().astype(np.int64), te.factors[:n_test].numpy().astype(np.int64)
        return x_fit, None, x_test, None, list(tr.factor_names), a_fit, a_test
    return None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)


def _tile(x: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> an array imshow draws (grey or RGB) in [0, 1]."""
    a = ((x.clamp(-1, 1) + 1) / 2).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def image_table(tiles, row_labels, col_labels, title: str, path: Path) -> None:
    """A labelled grid of images: tiles[r][c] are [C, H, W] tensors in [-1, 1]."""
    plt = _plt()
    R, C = len(tiles), len(tiles[0])
    fig, axs = plt.subplots(R, C, figsize=(0.9 * C + 1.6, 0.9 * R + 0.7), squeeze=False)
    for r in range(R):
        for c in range(C):
            ax = axs[r][c]
            ax.imshow(_tile(tiles[r][c]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def probe_figure(res: dict, names, D: int, path: Path) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    k = np.arange(len(names))
    a1.bar(k, res["balanced_accuracy"], color="tab:blue")
    a1.set_ylim(0.5, 1)
    a1.set_ylabel("balanced accuracy (test)")
    a2.bar(k, res["participation_ratio"], color="tab:orange")
    a2.axhline(np.sqrt(D), color="k", ls="--", lw=0.8, label=f"all {D} axes equal: sqrt(D)")
    a2.axhline(1, color="k", ls=":", lw=0.8, label="one axis: 1")
    a2.set_ylabel("participation ratio of weights")
    a2.legend(fontsize=7)
    for a in (a1, a2):
        a.set_xticks(k)
        a.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    fig.suptitle("one-vs-rest linear probes on posterior means", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


TOP_K = (1, 2, 3, 4, 8)  # the axes counts of the top-k curve (and the code's whole size)


def probe_baselines(x_fit, y_fit, x_test, y_test, mu_fit, mu, var, seed: int = 0, cv: bool = False) -> dict:
    """The simple baselines beside the code's linear probe, by the same probe (``linear_probe``, same fit and
    test images): raw pixels, and PCA of the pixels with the code's dimension (fitted on the fit images); and
    the top-k curve (the paper's Fig. 3H claim that a few axes suffice): the probe on the code's k axes of
    smallest mean posterior variance on the test images (the most certain first) against the first k
    principal components. ``cv``: each probe's C by cross-validation (``linear_probe``)."""
    from sklearn.decomposition import PCA

    p_fit = np.asarray(x_fit, np.float64).reshape(len(x_fit), -1)
    p_test = np.asarray(x_test, np.float64).reshape(len(x_test), -1)
    D = mu.shape[1]
    pca = PCA(n_components=D, random_state=seed).fit(p_fit)
    c_fit, c_test = pca.transform(p_fit), pca.transform(p_test)
    order = np.argsort(np.asarray(var).mean(0))
    ks = sorted({k for k in TOP_K if k < D} | {D})
    mu_fit, mu = np.asarray(mu_fit), np.asarray(mu)
    pca_k = [linear_probe(c_fit[:, :k], y_fit, c_test[:, :k], y_test, seed, cv)["accuracy"] for k in ks]
    return {"pixels": linear_probe(p_fit, y_fit, p_test, y_test, seed, cv)["accuracy"],
            "pca": pca_k[-1], "dim": D,  # ks ends at D: the whole PCA, probed once
            "top_k": {"k": ks, "axis_order": order.tolist(),
                      "code": [linear_probe(mu_fit[:, order[:k]], y_fit, mu[:, order[:k]], y_test, seed,
                                                cv)["accuracy"] for k in ks],
                      "pca": pca_k}}


def probe_baselines_figure(code: float, base: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    t = base["top_k"]
    ax.plot(t["k"], t["code"], "o-", color="tab:blue", label="the code's k most certain axes")
    ax.plot(t["k"], t["pca"], "s--", color="tab:orange", label="the first k principal components of the pixels")
    ax.axhline(base["pixels"], color="k", ls=":", lw=1, label=f"raw pixels ({base['pixels']:.3f})")
    ax.set_xlabel("axes (k)")
    ax.set_ylabel("linear probe class accuracy (test)")
    ax.set_xticks(t["k"])
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"probe on the {base['dim']}-d code {code:.3f}, PCA-{base['dim']} {base['pca']:.3f}, "
                 f"pixels {base['pixels']:.3f}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def variance_spectra(var: np.ndarray, out_dir: Path, n_images: int = 8) -> dict:
    """Each image's posterior variances in ascending order (Fig. 3C), and the mean spectrum."""
    spec = np.sort(var, axis=1)
    lines = ["image," + ",".join(f"rank_{k}" for k in range(var.shape[1]))]
    lines += [f"{i}," + ",".join(f"{v:.6g}" for v in spec[i]) for i in range(min(n_images, len(var)))]
    lines.append("mean," + ",".join(f"{v:.6g}" for v in spec.mean(0)))
    write_text(out_dir / "variance_spectra.csv", "\n".join(lines) + "\n")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i in range(min(n_images, len(var))):
        ax.plot(spec[i], lw=0.8, alpha=0.7)
    ax.plot(spec.mean(0), "k", lw=2, label=f"mean over {len(var)} test images")
    ax.set_yscale("log")
    ax.set_xlabel("axis, ordered by the image's posterior variance")
    ax.set_ylabel("posterior variance")
    ax.axhline(1, color="grey", ls=":", lw=0.8)
    ax.legend(fontsize=7)
    ax.set_title("per-image posterior-variance spectra", fontsize=9)
    fig.tight_layout()
    _save(fig, out_dir / "variance_spectra.png")
    return {"mean_spectrum": spec.mean(0).tolist(), "axes_below_0.1": float((var < 0.1).sum(1).mean())}


def _decode(model, cfg, abar, z: torch.Tensor, group: int, steps: int, seed: int) -> torch.Tensor:
    """Guided DDIM of codes z [N, D] in one batch; each run of ``group`` consecutive codes shares one x_T (only z
    changes within a group)."""
    from train.sampling import sample

    g = torch.Generator().manual_seed(seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    x_T = torch.randn((len(z) // group, *shape), generator=g).repeat_interleave(group, 0)
    return sample(model, abar, (len(z), *shape), z=z, steps=min(steps, cfg.T), eta=0.0,
                  scale=float(cfg.sampling_scale), x_init=x_T)


def _moved(mu_i: np.ndarray, d: int, offsets, spread) -> np.ndarray:
    z = np.repeat(mu_i[None], len(offsets), 0)
    z[:, d] += np.asarray(offsets) * spread[d]
    return z


def traversal(model, cfg, abar, x, mu, var, spread, out_dir: Path, n_images: int = 4, n_axes: int = 3,
              offsets=(-3, -1.5, 0, 1.5, 3), steps: int = 50, seed: int = 0) -> dict:
    """For each of the first n_images test images, its n_axes lowest-variance axes moved by ``offsets`` code
    spreads from the image's posterior mean (Fig. 3E); the first column is the image itself."""
    used = [(i, int(d)) for i in range(n_images) for d in np.argsort(var[i])[:n_axes]]
    z = np.concatenate([_moved(mu[i], d, offsets, spread) for i, d in used])
    imgs = _decode(model, cfg, abar, torch.from_numpy(z).float(), len(offsets), steps, seed)
    k = len(offsets)
    rows = [[x[i]] + list(imgs[r * k : (r + 1) * k]) for r, (i, _) in enumerate(used)]
    labels = [f"image {i}\nz{d} (var {var[i, d]:.2g})" for i, d in used]
    cols = ["image"] + [f"{o:+g} spread" for o in offsets]
    image_table(rows, labels, cols, "traversal along each image's lowest-variance axes (guided DDIM, one x_T)",
                out_dir / "traversal.png")
    return {"images_axes": [list(u) for u in used], "offsets_in_spread": list(offsets)}


@torch.no_grad()
def global_axes(model, abar, x, mu, var, seed: int = 0, high_abar: float = HIGH_NOISE_ABAR) -> dict:
    """Appendix A.8's global-axis measure per axis d (docs/design.md section 5 derives it):

    - spread share a_d = Var_x[mu_d(x)] / (Var_x[mu_d(x)] + E_x[var_d(x)]) (small: clean images' means
      barely differ along d);
    - high-noise width b_d = min(1, E_x[var_d(x_t)] / (Var_x[mu_d(x)] + E_x[var_d(x)])) at abar_t =
      ``high_abar`` (large: a noisy image leaves d as open as the whole population does);
    - sensitivity c_d = Std_x[var_d(x_t)] / E_x[var_d(x_t)] (small: the guidance weight 1/var_d is the
      same whatever the noisy image);
    - score g_d = (1 - a_d) b_d / (1 + c_d^2), in [0, 1], 1 for an axis whose guidance term is the same
      direction and weight for every image."""
    t = int(np.argmin(np.abs(np.asarray(abar) - high_abar)))
    a = float(abar[t])
    g = torch.Generator().manual_seed(seed)
    x_t = a**0.5 * x + (1 - a) ** 0.5 * torch.randn(x.shape, generator=g)
    _, v_t = model.encoder(x_t)
    v_t = v_t.double().numpy()
    pop = mu.var(0)
    total = pop + var.mean(0)
    share = pop / total
    width = np.minimum(1.0, v_t.mean(0) / total)
    sens = v_t.std(0) / v_t.mean(0)
    score = (1 - share) * width / (1 + sens**2)
    return {"t": t, "abar": a, "spread_share": share.tolist(), "high_noise_width": width.tolist(),
            "sensitivity": sens.tolist(), "score": score.tolist(), "ranking": np.argsort(-score).tolist()}


def global_axes_figure(model, cfg, abar, x, mu, spread, ranking, out_dir: Path, n_axes: int = 3,
                       n_images: int = 6, offsets=(-3, 0, 3), steps: int = 50, seed: int = 0) -> None:
    """The top global axes applied to several images: each row an image, each column block one axis moved by
    ``offsets`` code spreads."""
    per_row = n_axes * len(offsets)
    z = np.concatenate([_moved(mu[i], d, offsets, spread) for i in range(n_images) for d in ranking[:n_axes]])
    imgs = _decode(model, cfg, abar, torch.from_numpy(z).float(), per_row, steps, seed)
    rows = [[x[i]] + list(imgs[i * per_row : (i + 1) * per_row]) for i in range(n_images)]
    cols = ["image"] + [f"z{d} {o:+g}" for d in ranking[:n_axes] for o in offsets]
    image_table(rows, [f"image {i}" for i in range(n_images)], cols,
                "top global axes (appendix A.8) applied to several images, in code spreads", out_dir / "global_axes.png")


def write_global_csv(res: dict, path: Path) -> None:
    lines = ["axis,score,spread_share,high_noise_width,sensitivity"]
    for d in res["ranking"]:
        lines.append(f"z{d},{res['score'][d]:.4f},{res['spread_share'][d]:.4f},{res['high_noise_width'][d]:.4f},"
                     f"{res['sensitivity'][d]:.4f}")
    write_text(path, "\n".join(lines) + "\n")


def labelled_analyses(model, cfg, abar, out_dir: Path, n_fit: int = 5000, n_test: int = 2000,
                      generate: bool = True, steps: int = 50, seed: int = 0, progress=print) -> dict | None:
    """Every analysis above for a labelled data set; None when the data set has no labels."""
    from train.nets import encode

    sets = labelled_sets(cfg, n_fit, n_test, seed)
    if sets is None:
        return None
    x_fit, y_fit, x, y, names, a_fit, a_test = sets
    out_dir = Path(out_dir)
    progress(f"labelled analyses: encoding {len(x_fit)} + {len(x)} images")
    mu_fit, _ = encode(model, x_fit)
    mu, var = encode(model, x)
    spread = mu.std(0)
    res: dict = {"attributes": names, "code_spread": spread.tolist()}
    if y_fit is not None:
        # every probe's C chosen by cross-validation on the fit images: C = 1 under-regularises the raw pixels
        # (Fashion-MNIST's pick C = 0.01), which made a weak baseline (benchmarks/RESULTS.md, issue 30)
        res["probe_accuracy"] = linear_probe(mu_fit, y_fit, mu, y, seed, cv=True)["accuracy"]
        progress("labelled analyses: the same probe on raw pixels and on PCA of the code's size")
        res["probe_baselines"] = probe_baselines(x_fit, y_fit, x, y, mu_fit, mu, var, seed, cv=True)
        probe_baselines_figure(res["probe_accuracy"], res["probe_baselines"], out_dir / "probe_baselines.png")
    probes = attribute_probes(mu_fit, a_fit, mu, a_test, seed)
    res["balanced_accuracy"] = probes["balanced_accuracy"]
    res["participation_ratio"] = probes["participation_ratio"]
    probe_figure(probes, names, mu.shape[1], out_dir / "probes.png")
    t = tad(mu, a_test)
    res.update(tad=t["tad"], tad_attributes=t["tad_attributes"], captured=[names[k] for k in t["captured"]])
    res["spectra"] = variance_spectra(var, out_dir)
    if cfg.model != "sami":
        return res
    progress("labelled analyses: global axes")
    ga = global_axes(model, abar, x[:1000], mu[:1000], var[:1000], seed)
    write_global_csv(ga, out_dir / "global_axes.csv")
    res["global_axes"] = ga
    if generate:
        progress("labelled analyses: traversal and global-axis figures")
        res["traversal"] = traversal(model, cfg, abar, x, mu, var, spread, out_dir, steps=steps, seed=seed)
        global_axes_figure(model, cfg, abar, x, mu, spread, ga["ranking"], out_dir, steps=steps, seed=seed)
    return res
