"""The procedural disks in numpy: the one renderer behind the training data (``train.data.render_disks``),
the example inputs (``examples/make_examples.py``) and the synthetic video the benchmarks time
(``write_disk_video``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sami_rt.media.images import write_video


def render_disks(factors, size: int | tuple[int, int] = 32, radius: float = 4.0,
                 foreground: float = 0.5) -> np.ndarray:
    """Anti-aliased disks [n, H, W] (float64, intensities in [0, 1]) from factors [n, 3] (centre x, centre y
    in pixels, background intensity); ``size`` is the side of a square image or (H, W).

    A pixel's disk coverage is clip(radius + 0.5 - distance, 0, 1), distance measured from the pixel
    centre, so the edge is a one-pixel linear ramp and the coverage-weighted centroid is the centre.
    """
    f = np.asarray(factors, dtype=np.float64).reshape(-1, 3)
    H, W = (size, size) if np.ndim(size) == 0 else size
    dx = (np.arange(W, dtype=np.float64) + 0.5)[None, None, :] - f[:, 0, None, None]  # (n, 1, W)
    dy = (np.arange(H, dtype=np.float64) + 0.5)[None, :, None] - f[:, 1, None, None]  # (n, H, 1)
    cover = np.clip(radius + 0.5 - np.sqrt(dx**2 + dy**2), 0.0, 1.0)  # (n, H, W)
    bg = f[:, 2, None, None]
    return bg * (1 - cover) + foreground * cover


def to_pixels(intensity: np.ndarray) -> np.ndarray:
    """Intensities in [0, 1] -> uint8 pixels (rounded)."""
    return np.round(np.asarray(intensity) * 255).astype(np.uint8)


def write_disk_video(path: str | Path, frames: int, size: tuple[int, int] = (640, 480), fps: float = 30.0) -> None:
    """A grey mp4 (mp4v) of a disk (radius an eighth of the height, pixel 230 on 40) moving in a straight
    line from the top-left corner to the bottom-right one; ``size`` is (width, height)."""
    W, H = size
    r = H // 8
    fs = (k / max(frames - 1, 1) for k in range(frames))
    write_video(path, (to_pixels(render_disks([(r + (W - 2 * r) * f, r + (H - 2 * r) * f, 40 / 255)], (H, W), r,
                                              230 / 255)[0]) for f in fs), fps=fps)


def disk_centres(images: np.ndarray, foreground: float) -> np.ndarray:
    """Centres (x, y) in pixels [N, 2] of the disks in uint8 images [N, H, W, C] (the first channel): coverage-
    weighted centroids, the inverse of ``render_disks``, each image's background taken as its median pixel
    (right while the disk covers well under half of the image)."""
    v = np.asarray(images)[..., 0].astype(np.float64) / 255.0
    bg = np.median(v.reshape(len(v), -1), axis=1)[:, None, None]
    cover = np.clip((v - bg) / (foreground - bg), 0.0, 1.0)
    cx, cy = np.arange(v.shape[2]) + 0.5, np.arange(v.shape[1]) + 0.5
    w = cover.sum(axis=(1, 2))
    return np.stack([(cover * cx[None, None, :]).sum(axis=(1, 2)) / w, (cover * cy[None, :, None]).sum(axis=(1, 2)) / w], 1)
