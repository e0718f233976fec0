"""The figures of train/disk_checks.py (matplotlib, Agg; each panel titled, axes labelled with units), written
atomically. Without matplotlib nothing is drawn (the numbers in disk_checks.json stay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.io import atomic_path


def _levels(d: dict) -> str:
    """A title's guidance interval, where the scale did not apply at every noise level."""
    lo, hi = d.get("interval", (0.0, 1.0))
    return "" if (lo, hi) == (0.0, 1.0) else f" at levels {lo:g}-{hi:g}, 1 elsewhere"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, plt, path: Path, dpi: int = 110) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def plot_fold(maps, fold: dict, g, path: Path, name: str) -> None:
    """Top row: the x-y grid of disks drawn in the (z_x, z_y) plane, one panel per background, reversed cells
    filled red. Bottom row: each cell's orientation over the disk's (x, y)."""
    plt = _pyplot()
    if plt is None:
        return
    P, signs, major = maps["axes"]
    nb, n = P.shape[0], P.shape[1]
    fig, axs = plt.subplots(2, nb, figsize=(4.2 * nb, 8.2), squeeze=False)
    pos = g.positions(n)
    zx, zy = fold["z_x"], fold["z_y"]
    for b in range(nb):
        ax = axs[0, b]
        Q = P[b]
        for i in range(n):
            ax.plot(Q[i, :, 0], Q[i, :, 1], color="0.65", lw=0.4)
            ax.plot(Q[:, i, 0], Q[:, i, 1], color="0.65", lw=0.4)
        for i, j in zip(*np.nonzero(signs[b] != major)):
            quad = Q[[i, i, i + 1, i + 1], [j, j + 1, j + 1, j]]
            ax.fill(quad[:, 0], quad[:, 1], color="red", alpha=0.45, lw=0)
        ax.plot(Q[0, :, 0], Q[0, :, 1], color="tab:blue", lw=1.5, label="top row of disks (y min)")
        ax.plot(Q[:, 0, 0], Q[:, 0, 1], color="tab:orange", lw=1.5, label="left column (x min)")
        frac = fold["axes"]["fold_fraction_per_background"][b]
        ax.set_title(f"background {fold['backgrounds'][b]:.2f}: {frac:.1%} of cells reversed", fontsize=9)
        ax.set_xlabel(f"posterior mean z{zx} (axis of x)")
        ax.set_ylabel(f"posterior mean z{zy} (axis of y)")
        if b == 0:
            ax.legend(fontsize=7, loc="best")
        ax = axs[1, b]
        rev = (signs[b] != major).astype(float)
        ax.imshow(rev, origin="upper", cmap="Reds", vmin=0, vmax=1.5,
                  extent=(pos[0], pos[-1], pos[-1], pos[0]))
        ax.set_xlabel("disk centre x (px)")
        ax.set_ylabel("disk centre y (px)")
        ax.set_title(f"reversed cells (red) over the disk's position, background {fold['backgrounds'][b]:.2f}",
                     fontsize=8)
    a = fold["axes"]
    fig.suptitle(f"{name}: orientation of (x, y) -> (z{zx}, z{zy}) on a {n}x{n} grid; fold fraction "
                 f"{a['fold_fraction']:.3f}; x axis at {a['angle_x_deg']:.0f} deg, y at {a['angle_y_deg']:.0f} deg",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, plt, path)


def plot_decode(dec, d: dict, g, path: Path, name: str) -> None:
    """Per background: an arrow from each true centre to the decoded disk's centre, coloured by the error."""
    plt = _pyplot()
    if plt is None:
        return
    f, centres, err = dec
    bgs = d["backgrounds"]
    fig, axs = plt.subplots(1, len(bgs), figsize=(4.3 * len(bgs) + 0.8, 4.4), squeeze=False)
    vmax = max(2.0, float(np.nanmax(err)) if np.isfinite(err).any() else 2.0)
    for b, ax in zip(bgs, axs[0]):
        sel = f[:, 2] == b
        ok = sel & np.isfinite(err)
        q = ax.quiver(f[ok, 0], f[ok, 1], centres[ok, 0] - f[ok, 0], centres[ok, 1] - f[ok, 1], err[ok],
                      angles="xy", scale_units="xy", scale=1, cmap="viridis", clim=(0, vmax), width=0.006)
        ax.scatter(f[sel, 0], f[sel, 1], s=6, color="k", zorder=3, label="true centre")
        miss = sel & ~np.isfinite(err)
        if miss.any():
            ax.scatter(f[miss, 0], f[miss, 1], s=40, marker="x", color="red", label="no disk decoded")
        ax.set_xlim(0, g.size)
        ax.set_ylim(g.size, 0)
        ax.set_aspect("equal")
        ax.set_xlabel("disk centre x (px)")
        ax.set_ylabel("disk centre y (px)")
        med = np.nanmedian(err[sel]) if np.isfinite(err[sel]).any() else float("nan")
        ax.set_title(f"background {b:.2f}: median error {med:.2f} px", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.colorbar(q, ax=axs[0].tolist(), label="position error (px)")
    fig.suptitle(f"{name}: decoded from the posterior mean (scale {d['scale']:g}{_levels(d)}, {d['sampler']} "
                 f"{d['steps']} steps): median {d['median_px']:.2f} px, max {d['max_px']:.2f} px", fontsize=10)
    _save(fig, plt, path)


def plot_lines(lines, it: dict, g, path: Path, name: str, rows: int = 10) -> None:
    """The first ``rows`` interpolation lines: disk A, the decoded images, disk B, and the verdict."""
    plt = _pyplot()
    if plt is None:
        return
    from sami_rt.media.disks import render_disks

    A, B, imgs, verdicts = lines
    n, P = min(len(A), rows), imgs.shape[1]
    fig, axs = plt.subplots(n, P + 2, figsize=(0.85 * (P + 2) + 1.4, 0.9 * n + 0.9), squeeze=False)
    lam = np.linspace(0, 1, P)
    for i in range(n):
        ends = render_disks(np.stack([A[i], B[i]]), g.size, g.radius, g.foreground) * 2 - 1
        for j, im in enumerate([ends[0], *imgs[i], ends[1]]):
            ax = axs[i, j]
            ax.imshow(im, cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("disk A" if j == 0 else "disk B" if j == P + 1 else f"l={lam[j - 1]:.2f}", fontsize=7)
        ax = axs[i, -1]
        ax.text(1.1, 0.5, verdicts[i], transform=ax.transAxes, va="center", fontsize=8,
                color="green" if verdicts[i] == "pass" else "red")
    fig.suptitle(f"{name}: decoded along z = (1 - l) mu(A) + l mu(B), the same noise along a row "
                 f"(scale {it['scale']:g}{_levels(it)}, {it['sampler']} {it['steps']} steps): "
                 f"{it['passed']}/{it['pairs']} pass",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, plt, path, dpi=100)
