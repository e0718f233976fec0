"""What the code does with the disks' factors, as pictures and tables (paper Fig. 2D/E) and an interpolation check.

- ``axis_r2_table``: the R^2 of each latent axis alone against each factor (a least-squares line: the
  squared correlation), axis x factor, written as CSV; ``best_distinct_axes`` assigns one different axis
  to each factor.
- ``latent_grids``: posterior means of disks on an x-y grid at a fixed background and on an
  x-background grid at a fixed y, as CSV and a PNG that draws each grid's lines in the plane of the axes
  assigned to its two factors: a Cartesian code draws a regular grid, a folded one a self-crossing sheet.
- ``interpolation_check``: along the straight line between the posterior means of two disks, images are
  decoded (DDIM from one shared x_T, so only z changes along the line); in each decoded image the disk is
  found from its pixels (``find_disks``). A pair passes when every image has exactly one disk, the decoded
  ends lie near the two true disks (within a quarter of their distance, at least 2 px), the centre moves
  monotonically from one to the other (projection onto the true A -> B segment, 5% slack) and no step
  between neighbours is longer than ``max_step`` of the distance between the true disks.
"""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import numpy as np
import torch

from train.io import atomic_path, write_text
from train.metrics import axis_r2


def best_distinct_axes(r2: np.ndarray) -> list[int]:
    """One different axis per factor maximising the summed single-axis R^2 (exhaustive; D and K are small)."""
    D, K = r2.shape
    best = max(permutations(range(D), K), key=lambda p: sum(r2[p[k], k] for k in range(K)))
    return list(best)


def axis_r2_table(codes, factors, names, path: Path | None = None) -> dict:
    r2 = axis_r2(np.asarray(codes, np.float64), np.asarray(factors, np.float64))
    axes = best_distinct_axes(r2)
    if path is not None:
        lines = ["axis," + ",".join(names)] + [f"z{d}," + ",".join(f"{v:.4f}" for v in row) for d, row in enumerate(r2)]
        write_text(path, "\n".join(lines) + "\n")
    return {"axis_r2": r2.tolist(), "factor_axes": dict(zip(names, axes)),
            "factor_axis_r2": {n: float(r2[a, k]) for k, (n, a) in enumerate(zip(names, axes))}}


@torch.no_grad()
def latent_grids(model, cfg, factor_axes: dict, out_dir: Path, n: int = 15) -> dict:
    """Posterior means over an x-y grid (background at the middle of its range) and an x-background grid (y at
    the image centre); CSV rows: grid, x, y, background, mu_0..mu_{D-1}."""
    from train.data import render_disks

    r, size = cfg.disk_radius, cfg.image_size
    pos = np.linspace(r, size - r, n)
    bgs = np.linspace(cfg.disk_bg_min, cfg.disk_bg_max, n)
    mid_bg, mid_y = 0.5 * (cfg.disk_bg_min + cfg.disk_bg_max), size / 2
    grids = {"xy": np.array([[x, y, mid_bg] for y in pos for x in pos]),
             "xbg": np.array([[x, mid_y, b] for b in bgs for x in pos])}
    out, rows = {}, []
    for name, f in grids.items():
        mu, _ = model.encoder(render_disks(torch.from_numpy(f), size, r, cfg.disk_foreground))
        mu = mu.double().numpy()
        out[name] = (f, mu)
        rows += [",".join([name, *(f"{v:.4g}" for v in fi), *(f"{v:.5g}" for v in m)]) for fi, m in zip(f, mu)]
    D = out["xy"][1].shape[1]
    write_text(out_dir / "latent_grids.csv", "grid,x,y,background," + ",".join(f"mu_{d}" for d in range(D)) + "\n"
               + "\n".join(rows) + "\n")
    _plot_grids(out, factor_axes, n, out_dir / "latent_grids.png")
    return {"n": n, "background_xy": mid_bg, "y_xbg": mid_y}


def _plot_grids(out, factor_axes, n, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axs = plt.subplots(1, 2, figsize=(9, 4.4))
    spec = (("xy", "x", "y", "disk x (colour) / y (grey lines)", "fixed background"),
            ("xbg", "x", "background", "disk x (colour) / background (grey lines)", "fixed y"))
    for ax, (name, f0, f1, what, fixed) in zip(axs, spec):
        f, mu = out[name]
        a0, a1 = factor_axes[f0], factor_axes[f1]
        P = mu[:, [a0, a1]].reshape(n, n, 2)  # [row = second factor, column = x, 2]
        for i in range(n):
            ax.plot(P[i, :, 0], P[i, :, 1], color="0.6", lw=0.8)
        for j in range(n):
            ax.plot(P[:, j, 0], P[:, j, 1], color=plt.cm.viridis(j / (n - 1)), lw=1.2)
        ax.set_xlabel(f"posterior mean z{a0} (axis of {f0})")
        ax.set_ylabel(f"posterior mean z{a1} (axis of {f1})")
        ax.set_title(f"{f0}-{f1} grid of disks, {fixed}\n{what}", fontsize=9)
    fig.suptitle("Posterior means over grids of disks (a Cartesian code draws a regular grid)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def find_disks(images: np.ndarray, foreground: float, min_pixels: int = 3, level: float = 0.3, peaks: bool = False):
    """Per image [N, H, W] in [-1, 1]: (number of blobs, centre (x, y) in pixels or NaN). The background is the
    median pixel; a blob is a 4-connected region of at least ``min_pixels`` pixels differing from it by more than
    ``level`` of the disk's contrast; the centre is the contrast-weighted centroid of the largest blob. With
    ``peaks`` also the largest blob's strongest pixel as a fraction of the disk's contrast (NaN: no blob)."""
    from scipy import ndimage

    counts, centres, top = [], [], []
    for im in (np.asarray(images, np.float64) + 1) / 2:
        bg = np.median(im)
        contrast = foreground - bg
        if abs(contrast) < 0.1:
            counts.append(0)
            centres.append((np.nan, np.nan))
            top.append(np.nan)
            continue
        w = np.clip((im - bg) / contrast, 0, 1)
        lab, k = ndimage.label(w > level)
        sizes = ndimage.sum(np.ones_like(w), lab, range(1, k + 1)) if k else np.array([])
        big = [i + 1 for i, s in enumerate(sizes) if s >= min_pixels]
        counts.append(len(big))
        if not big:
            centres.append((np.nan, np.nan))
            top.append(np.nan)
            continue
        keep = np.where(lab == max(big, key=lambda i: sizes[i - 1]), w, 0)
        ys, xs = np.mgrid[: im.shape[0], : im.shape[1]]
        centres.append(((keep * (xs + 0.5)).sum() / keep.sum(), (keep * (ys + 0.5)).sum() / keep.sum()))
        top.append(float(keep.max()))
    return (np.array(counts), np.array(centres)) + ((np.array(top),) if peaks else ())


def judge_path(counts: np.ndarray, centres: np.ndarray, max_step: float, ends: np.ndarray | None = None,
               slack: float = 0.05, end_tol: float = 0.25) -> dict:
    """One interpolation line: one blob everywhere, monotone progress, no step over ``max_step`` of the distance.

    With ``ends`` [2, 2] (the true centres of the two disks) progress and steps are measured along and in units
    of the true A -> B segment, and the decoded ends must lie within ``end_tol`` of its length (at least 2 px)
    of the true centres; without, along the decoded ends' own segment."""
    one_blob = bool((counts == 1).all())
    a, b = (ends[0], ends[1]) if ends is not None else (centres[0], centres[-1])
    d = b - a
    dist = float(np.hypot(*d))
    if not one_blob or dist < 1e-6:
        return {"passed": False, "one_blob": one_blob, "monotone": False, "reaches_ends": False,
                "max_step": float("nan"), "distance": dist}
    proj = (centres - a) @ d / dist**2
    steps = np.hypot(*np.diff(centres, axis=0).T) / dist
    monotone = bool((np.diff(proj) >= -slack).all())
    tol = max(end_tol * dist, 2.0)
    reaches = ends is None or bool(np.hypot(*(centres[0] - a)) <= tol and np.hypot(*(centres[-1] - b)) <= tol)
    return {"passed": bool(monotone and reaches and steps.max() <= max_step), "one_blob": True, "monotone": monotone,
            "reaches_ends": reaches, "max_step": float(steps.max()), "distance": dist}


def _plot_interpolation(starts, ends, lines, results, lam, path, rows: int = 8) -> None:
    """Labelled figure: per row a pair's two disks and the images decoded along the line, with its verdict."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from train.sampling import save_grid

        n = min(len(starts), rows)
        save_grid(torch.cat([starts[:n, None], lines[:n], ends[:n, None]], 1).flatten(0, 1), path, nrow=lines.shape[1] + 2)
        return
    n, P = min(len(starts), rows), lines.shape[1]
    fig, axs = plt.subplots(n, P + 2, figsize=(0.9 * (P + 2) + 1.6, 0.95 * n + 0.6), squeeze=False)
    for i in range(n):
        tiles = [starts[i], *lines[i], ends[i]]
        for j, im in enumerate(tiles):
            ax = axs[i, j]
            ax.imshow(im[0].numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("disk A" if j == 0 else "disk B" if j == P + 1 else f"{lam[j - 1]:.2f}", fontsize=8)
        r = results[i]
        verdict = "pass" if r["passed"] else ("fail: blobs" if not r["one_blob"] else
                                              "fail: goes back" if not r["monotone"] else
                                              "fail: misses an end" if not r["reaches_ends"] else "fail: jump")
        axs[i, -1].text(1.15, 0.5, verdict, transform=axs[i, -1].transAxes, va="center", fontsize=8,
                        color="green" if r["passed"] else "red")
    fig.suptitle("Decoded along z = (1 - l) mu(A) + l mu(B) (DDIM, one x_T per row)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _median_finite(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else float("nan")


def interpolation_check(model, cfg, abar, out_dir: Path | None = None, pairs: int = 50, points: int = 8,
                        steps: int = 50, scale: float = 1.0, max_step: float = 0.35, min_distance: float = 8.0,
                        seed: int = 0) -> dict:
    """``pairs`` pairs of fresh disks at least ``min_distance`` px apart, both with a visible disk; ``points``
    decoded images along each line (ends included)."""
    from train.data import make_disks, disk_options
    from train.sampling import sample

    x, f = make_disks(8 * pairs + 64, cfg.data_seed + 3_000_017 + seed, **disk_options(cfg))
    f = f.numpy()
    visible = np.abs(cfg.disk_foreground - f[:, 2]) >= 0.2
    rng = np.random.default_rng(seed)
    idx = rng.permutation(np.flatnonzero(visible))
    chosen = []
    for a in idx:
        for b in idx:
            if a != b and np.hypot(*(f[a, :2] - f[b, :2])) >= min_distance and a not in chosen and b not in chosen:
                chosen += [a, b]
                break
        if len(chosen) >= 2 * pairs:
            break
    A, B = np.array(chosen[0::2]), np.array(chosen[1::2])
    with torch.no_grad():
        mu, _ = model.encoder(x)
    lam = torch.linspace(0, 1, points, dtype=mu.dtype)
    z = (mu[A][:, None] * (1 - lam[:, None]) + mu[B][:, None] * lam[:, None]).reshape(-1, mu.shape[1])
    g = torch.Generator().manual_seed(seed + 11)
    x_T = torch.randn((len(A), 1, cfg.channels, cfg.image_size, cfg.image_size), generator=g)
    x_T = x_T.expand(-1, points, -1, -1, -1).reshape(-1, cfg.channels, cfg.image_size, cfg.image_size)
    imgs = sample(model, abar, x_T.shape, z=z, steps=min(steps, cfg.T), eta=0.0, scale=scale, x_init=x_T)
    counts, centres = find_disks(imgs[:, 0].numpy(), cfg.disk_foreground)
    counts, centres = counts.reshape(len(A), points), centres.reshape(len(A), points, 2)
    results = [judge_path(counts[i], centres[i], max_step, np.stack([f[A[i], :2], f[B[i], :2]]))
               for i in range(len(A))]
    out = {"pairs": len(A), "points": points, "steps": steps, "scale": scale, "max_step_allowed": max_step,
           "passed": int(sum(r["passed"] for r in results)),
           "one_blob": int(sum(r["one_blob"] for r in results)),
           "monotone": int(sum(r["monotone"] for r in results)),
           "reaches_ends": int(sum(r["reaches_ends"] for r in results)),
           # NaN where no path was one blob throughout (an untrained model): no step was measured
           "median_max_step": _median_finite([r["max_step"] for r in results])}
    if out_dir is not None:
        _plot_interpolation(x[A], x[B], imgs.reshape(len(A), points, *imgs.shape[1:]), results, lam.numpy(),
                            out_dir / "interpolation.png")
    return out
