"""How straight a trajectory is: the curvature of a sequence of points (frames, or their latent codes), and
``VideoEncoding``, what encoding a video gives.

Curvature (Henaff et al. 2019): for a trajectory p_0 .. p_{N-1} with steps v_k = p_{k+1} - p_k, the
curvature at k is the angle between v_k and v_{k+1}, in degrees (0 = straight, 90 = orthogonal turn).
Cosine straightness (Niu et al. 2024): the mean over k of cos(v_k, v_{k+1}), 1 for a straight line, 0 for
orthogonal turns on average, -1 for a trajectory that reverses at every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def angles(points: np.ndarray) -> np.ndarray:
    """Curvature in degrees at each interior point of a trajectory [N, ...] (N - 2 values)."""
    p = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    v = np.diff(p, axis=0)
    a, b = v[:-1], v[1:]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-300)
    ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    ang[(na == 0) | (nb == 0)] = np.nan  # no direction where the trajectory does not move
    return ang


def straightness(curvature_deg: np.ndarray) -> float | None:
    """Cosine straightness: the mean cosine between successive steps, from their angles (``angles``); None
    when no angle is defined."""
    c = np.asarray(curvature_deg, dtype=np.float64)
    c = c[np.isfinite(c)]
    return float(np.cos(np.radians(c)).mean()) if len(c) else None


def mean_angle(curvature_deg: np.ndarray) -> float | None:
    """The mean of the defined angles; None when none is."""
    v = curvature_deg[np.isfinite(curvature_deg)]
    return float(v.mean()) if len(v) else None


def median_angle(curvature_deg: np.ndarray) -> float | None:
    """The median of the defined angles; None when none is."""
    v = curvature_deg[np.isfinite(curvature_deg)]
    return float(np.median(v)) if len(v) else None


@dataclass
class VideoEncoding:
    frames: np.ndarray  # frame indices in the video
    mu: np.ndarray  # [N, D]
    var: np.ndarray  # [N, D]
    latent_curvature: np.ndarray  # [N - 2] degrees
    pixel_curvature: np.ndarray  # [N - 2] degrees
    fps: float
    stopped_at: int | None = None  # frame where decoding stopped early (truncated file), else None
    notes: list[str] = field(default_factory=list)
    luma: bool = False  # frames read as the decoder's luma planes (one-channel models, yuv420p), not BGR

    @property
    def mean_latent_curvature(self) -> float | None:
        return mean_angle(self.latent_curvature)

    @property
    def mean_pixel_curvature(self) -> float | None:
        return mean_angle(self.pixel_curvature)

    @property
    def median_latent_curvature(self) -> float | None:
        return median_angle(self.latent_curvature)

    @property
    def median_pixel_curvature(self) -> float | None:
        return median_angle(self.pixel_curvature)

    @property
    def latent_straightness(self) -> float | None:
        return straightness(self.latent_curvature)

    @property
    def pixel_straightness(self) -> float | None:
        return straightness(self.pixel_curvature)

    def arrays(self) -> dict:
        """What ``sami-rt encode VIDEO`` and ``encode-corpus`` write (one .npz per video): per-frame indices,
        means and variances, the two curvatures, the luma flag and the two straightness figures (NaN where
        undefined)."""
        nan = lambda v: np.nan if v is None else v  # noqa: E731
        return dict(frames=self.frames, mu=self.mu, var=self.var, latent_curvature=self.latent_curvature,
                    pixel_curvature=self.pixel_curvature, luma=self.luma,
                    latent_straightness=nan(self.latent_straightness), pixel_straightness=nan(self.pixel_straightness))
