"""dSprites without a download: a procedural generator of the full factor grid (Matthey et al. 2017).

The published data set is 737,280 binary 64x64 images, white sprites on black, one per combination of
shape (square, ellipse, heart), scale (6 values, linearly 0.5 to 1), orientation (40 values over
[0, 2 pi)), and x and y position (32 values each over [0, 1]). Its description fixes the factors and the
grid but not the sprites' pixel geometry, which is chosen here and stated once:

- a sprite at scale 1 is 0.25 of the image wide (16 px at 64 px): a square of side 0.25, an ellipse with
  semi-axes 0.125 (along the orientation) and 0.0625, and a heart whose bounding box is 0.25 wide; at scale
  s every length is multiplied by s, so areas go with s^2;
- the centre is at 0.2 + 0.6 * position of the image (0.2 to 0.8), so that the largest rotated sprite
  stays inside;
- orientation rotates the sprite counter-clockwise about its centre, in image coordinates with y down;
- a pixel is white when its centre lies inside the sprite (binary, no anti-aliasing), as in dSprites.

Factor classes are integer indices into these grids (``DSPRITES_SIZES``), in the order of
``DSPRITES_FACTORS``. ``--data-path dsprites_ndarray_*.npz`` (the published file: ``imgs`` and
``latents_classes``, whose first column is the constant colour) is used instead when given.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from sami_rt.errors import DataError

DSPRITES_FACTORS = ("shape", "scale", "orientation", "x", "y")
DSPRITES_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")


def factor_values(classes: np.ndarray) -> dict:
    """Physical values of integer factor classes [N, 5]: scale, angle (rad), centre x, y (image fractions)."""
    c = np.asarray(classes)
    return {"shape": c[:, 0], "scale": np.linspace(0.5, 1.0, 6)[c[:, 1]],
            "angle": 2 * np.pi * c[:, 2] / 40, "x": 0.2 + 0.6 * c[:, 3] / 31, "y": 0.2 + 0.6 * c[:, 4] / 31}


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether sprite-frame points (u along the orientation, v across it; units of the scale-1 width) are inside."""
    if shape == 0:
        return (np.abs(u) <= 0.125) & (np.abs(v) <= 0.125)
    if shape == 1:
        return (u / 0.125) ** 2 + (v / 0.0625) ** 2 <= 1
    # heart: (X^2 + Y^2 - 1)^3 - X^2 Y^3 <= 0 spans X in [-1.14, 1.14], Y in [-1, 1.24]; pointing down (+v)
    X, Y = u / 0.125 * 1.14, -v / 0.125 * 1.12 + 0.12
    return (X**2 + Y**2 - 1) ** 3 - X**2 * Y**3 <= 0


def render_dsprites(classes: np.ndarray, size: int = 64) -> torch.Tensor:
    """Images [N, 1, size, size] in {-1, 1} (black -1, white 1) for factor classes [N, 5]."""
    val = factor_values(classes)
    c = (np.arange(size) + 0.5) / size
    px, py = np.meshgrid(c, c)  # [H, W]: x across, y down
    out = np.empty((len(val["scale"]), size, size), dtype=bool)
    for i in range(len(out)):
        dx, dy = px - val["x"][i], py - val["y"][i]
        a, s = val["angle"][i], val["scale"][i]
        # counter-clockwise on screen (y down) by a: rotate the offsets by -a into the sprite frame
        u = (np.cos(a) * dx - np.sin(a) * dy) / s
        v = (np.sin(a) * dx + np.cos(a) * dy) / s
        out[i] = _inside(int(val["shape"][i]), u, v)
    return torch.from_numpy(out[:, None].astype(np.float32) * 2 - 1)


def sample_classes(n: int, generator: torch.Generator) -> np.ndarray:
    """n factor combinations drawn uniformly from the full grid."""
    u = torch.rand(n, len(DSPRITES_SIZES), generator=generator, dtype=torch.float64).numpy()
    return np.minimum((u * np.array(DSPRITES_SIZES)).astype(np.int64), np.array(DSPRITES_SIZES) - 1)


def full_grid() -> np.ndarray:
    """Every factor combination [737280, 5], in the published file's order (the last factor fastest)."""
    return np.stack(np.meshgrid(*[np.arange(k) for k in DSPRITES_SIZES], indexing="ij"), -1).reshape(-1, 5)


class DSpritesFile:
    """The published ``dsprites_ndarray_*.npz``: images by factor classes (its colour column dropped)."""

    def __init__(self, path: str | Path):
        try:
            with np.load(path, allow_pickle=False) as z:
                self.imgs, classes = z["imgs"], z["latents_classes"]
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: not a dSprites .npz with imgs and latents_classes ({e})") from None
        self.classes = classes[:, 1:].astype(np.int64)
        strides = np.cumprod((1,) + DSPRITES_SIZES[::-1])[:-1][::-1]
        self.index = np.full(int(np.prod(DSPRITES_SIZES)), -1, dtype=np.int64)
        self.index[self.classes @ strides] = np.arange(len(self.classes))
        self.strides = strides

    def render(self, classes: np.ndarray, size: int = 64) -> torch.Tensor:
        idx = self.index[np.asarray(classes) @ self.strides]
        if (idx < 0).any():
            raise DataError(f"the dSprites file holds {len(self.classes)} of the {len(self.index)} factor combinations; "
                            f"combination {np.asarray(classes)[np.argmax(idx < 0)].tolist()} is not among them")
        x = torch.from_numpy(self.imgs[idx].astype(np.float32))[:, None] * 2 - 1
        if size != x.shape[-1]:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
        return x


@lru_cache(maxsize=2)
def open_file(path: str) -> DSpritesFile:
    """The published file at ``path``, read once per process (its images are 3 GB as uint8)."""
    return DSpritesFile(path)
