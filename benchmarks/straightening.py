"""Straightening on motion the model never saw: short videos of held-out Fashion-MNIST items under smooth
transformations, and how curved their trajectories are in SAMI's latent space, in pixel space and in a
beta-VAE baseline's latent space.

    python -m benchmarks.straightening --model fashion-mnist --baseline RUN_DIR [--items 20] [--frames 16]
        [--out benchmarks/straightening]

Transformations (each on a 28x28 item placed on the 32x32 black canvas the models see, bilinear resampling):
translation along a line (6 px over the clip, in a random direction), zoom (0.75x to 1.25x), rotation (-40 to
40 degrees) and a cross-fade between two items. Items come from the end of the Fashion-MNIST test split.
Per trajectory: the mean curvature (degrees between successive steps; sami_rt.video.trajectory.angles) and Niu et al.'s
cosine straightness (the mean cosine between successive steps); SAMI's trajectory is the posterior means of the
frames (sami_rt runtime, exact pixels), the baseline's its encoder means. Writes OUT/straightening.json, one
.mp4 per transformation (for ``sami-rt encode``) and OUT/straightening.png (a filmstrip of each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sami_rt.hardware.cpuinfo import report_machine

TRANSFORMS = ("translation", "zoom", "rotation", "cross-fade")


def _canvas(item: np.ndarray) -> np.ndarray:
    out = np.zeros((32, 32), np.float32)
    out[2:30, 2:30] = item
    return out


def clip(kind: str, a: np.ndarray, b: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 items [28, 28] -> frames [F, 32, 32] float in [0, 255]."""
    import cv2

    A, B = _canvas(a.astype(np.float32)), _canvas(b.astype(np.float32))
    s = np.linspace(0, 1, frames)
    out = []
    theta = rng.uniform(0, 2 * np.pi)
    for u in s:
        if kind == "cross-fade":
            out.append((1 - u) * A + u * B)
            continue
        if kind == "translation":
            d = (u - 0.5) * 6.0
            M = np.float32([[1, 0, d * np.cos(theta)], [0, 1, d * np.sin(theta)]])
        elif kind == "zoom":
            M = cv2.getRotationMatrix2D((15.5, 15.5), 0.0, 0.75 + 0.5 * u)
        else:
            M = cv2.getRotationMatrix2D((15.5, 15.5), -40 + 80 * u, 1.0)
        out.append(cv2.warpAffine(A, M, (32, 32), flags=cv2.INTER_LINEAR, borderValue=0))
    return np.clip(np.stack(out), 0, 255)


def trajectory_stats(points: np.ndarray) -> tuple[float, float]:
    from sami_rt.video.trajectory import angles, straightness

    ang = angles(points)
    return float(np.nanmean(ang)), float(straightness(ang))


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    from sami_rt.errors import VideoError
    from sami_rt.media.images import write_video

    try:
        write_video(path, frames, fps=fps)
    except VideoError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion-mnist", help="bundle directory or shipped model name")
    ap.add_argument("--baseline", type=Path, help="a beta-VAE run directory trained on Fashion-MNIST (torch)")
    ap.add_argument("--items", type=int, default=20, help="clips per transformation")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/straightening"))
    args = ap.parse_args(argv)
    report_machine()

    from sami_rt.runtime import Runtime, resolve_model
    from train.data import load_fashion_mnist

    x_test, _ = load_fashion_mnist("", "test")  # padded to 32x32 in [-1, 1]: back to the 28x28 pixels
    items = ((x_test[-2 * args.items :, 0, 2:30, 2:30].numpy() + 1.0) * 127.5).round()
    rt = Runtime(resolve_model(args.model), device="cpu")
    enc_base = None
    if args.baseline is not None:
        import torch

        from train.loop import load_run

        base, bcfg, _, _ = load_run(args.baseline)

        def enc_base(x):
            with torch.no_grad():
                return base.encoder(torch.from_numpy(x))[0].double().numpy()

    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, strips = {}, {}
    for kind in TRANSFORMS:
        acc = {"pixel": [], "sami": [], "beta_vae": []}
        for i in range(args.items):
            f = clip(kind, items[i], items[args.items + i], args.frames, rng)
            x = (f / 127.5 - 1.0).astype(np.float32)[:, None]
            mu, _ = rt.encode(x)
            acc["pixel"].append(trajectory_stats(x))
            acc["sami"].append(trajectory_stats(mu))
            if enc_base is not None:
                acc["beta_vae"].append(trajectory_stats(enc_base(x)))
            if i == 0:
                strips[kind] = f
                write_mp4(args.out / f"{kind}.mp4", f)
        rows[kind] = {k: {"curvature_deg": float(np.mean([c for c, _ in v])),
                          "cosine_straightness": float(np.mean([s for _, s in v])), "clips": len(v)}
                      for k, v in acc.items() if v}
        print(kind, json.dumps(rows[kind]), flush=True)
    from sami_rt.media.files import atomic_path

    res = {"model": str(rt.bundle.root), "baseline": str(args.baseline) if args.baseline else None,
           "frames": args.frames, "items": args.items, "seed": args.seed, "rows": rows}
    with atomic_path(args.out / "straightening.json") as tmp:
        Path(tmp).write_text(json.dumps(res, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, axs = plt.subplots(len(TRANSFORMS), args.frames, figsize=(args.frames * 0.6 + 1.5, len(TRANSFORMS) * 0.75 + 0.4))
    for r, kind in enumerate(TRANSFORMS):
        for c in range(args.frames):
            ax = axs[r][c]
            ax.imshow(strips[kind][c], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axs[r][0].set_ylabel(kind, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("held-out Fashion-MNIST items under smooth transformations (one clip per row)", fontsize=9)
    fig.tight_layout()
    with atomic_path(args.out / "straightening.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
