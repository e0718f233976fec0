"""Noise schedules as pure functions of a few numbers (float64 numpy).

Forward process: x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps, t = 0 .. T-1
(index 0 is the least noisy level). The model bundle stores ``abar`` itself, so
training, export and runtime all read the same array.
"""

from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("linear", "cosine", "scaled-linear")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. (2020): betas spaced linearly from beta_start to beta_end."""
    if T < 1:
        raise ValueError(f"T must be a positive number of noise levels, got {T}")
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def cosine_abar(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal (2021), Eq. 17: abar_t = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    Betas are clipped at ``max_beta`` as in the paper, so abar is recomputed from the
    clipped betas.
    """
    if T < 1:
        raise ValueError(f"T must be a positive number of noise levels, got {T}")
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f(i + 1) / f(i), max_beta) for i in range(T)], dtype=np.float64)
    return np.cumprod(1.0 - betas)


def make_abar(kind: str, T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """abar_t for t = 0 .. T-1 (float64, strictly decreasing, in (0, 1))."""
    if kind == "linear":
        return np.cumprod(1.0 - linear_betas(T, beta_start, beta_end))
    if kind == "cosine":
        return cosine_abar(T)
    if kind == "scaled-linear":  # latent-diffusion / diffusers "scaled_linear": linear in sqrt(beta)
        return np.cumprod(1.0 - linear_betas(T, beta_start**0.5, beta_end**0.5) ** 2)
    raise ValueError(f"unknown noise schedule {kind!r}; expected one of {SCHEDULES}")


def respace(T: int, steps: int) -> np.ndarray:
    """Evenly spaced subset of ``steps`` timesteps from T-1 down to 0 (descending, int64)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be between 1 and the model's T={T}, got {steps}")
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(np.int64))[::-1].copy()


def step_coefficients(abar: np.ndarray, timesteps: np.ndarray, eta: float) -> dict[str, np.ndarray]:
    """Per-step coefficients of the generalised DDIM update (Song et al. 2021, Eq. 12).

    For step i going from t = timesteps[i] to s = timesteps[i+1] (s = -1 means x_0, abar = 1):
        x0_hat = (x_t - sqrt(1 - abar_t) * eps_hat) / sqrt(abar_t)
        sigma  = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
        x_s    = sqrt(abar_s) * x0_hat + sqrt(1 - abar_s - sigma^2) * eps_hat + sigma * noise
    eta = 1 on the full set of timesteps is DDPM ancestral sampling; eta = 0 is DDIM.
    Returned as linear coefficients: x_s = c_x * x_t + c_eps * eps_hat + sigma * noise.
    """
    abar = np.asarray(abar, dtype=np.float64)
    t = np.asarray(timesteps, dtype=np.int64)
    a_t = abar[t]
    a_s = np.concatenate([abar[t[1:]], [1.0]])
    sigma = eta * np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(np.clip(1 - a_t / a_s, 0.0, None))
    c_x = np.sqrt(a_s / a_t)
    c_eps = np.sqrt(np.clip(1 - a_s - sigma**2, 0.0, None)) - np.sqrt(a_s) * np.sqrt(1 - a_t) / np.sqrt(a_t)
    return {"t": t, "c_x": c_x, "c_eps": c_eps, "sigma": sigma, "sqrt_1m_abar": np.sqrt(1 - a_t)}


# ------------------------------------------------------------------------------- parameterisations
# What a denoiser predicts, converted to the noise prediction eps that this project trains and samples with,
# on the variance-preserving scale (x_t = sqrt(a) x0 + sqrt(1 - a) eps, a = abar_t). Written with + - * /
# alone, so that one definition serves numpy arrays, the training side's tensors (train/frozen.py) and the
# symbols of an ONNX graph being built (export/compose.py); ``sqrt_a`` and ``sqrt_1ma`` broadcast against x_t.
PREDICTIONS = ("eps", "v", "x0-vp")


def eps_from_prediction(kind: str, out, x_t, sqrt_a, sqrt_1ma):
    """``out`` in parameterisation ``kind`` as eps: ``eps`` itself; ``v`` (Salimans & Ho 2022,
    v = sqrt(a) eps - sqrt(1 - a) x0): eps = sqrt(a) v + sqrt(1 - a) x_t; ``x0-vp`` (the clean image on the VP
    scale, diffusers' ``sample``): eps = (x_t - sqrt(a) x0) / sqrt(1 - a)."""
    if kind == "eps":
        return out
    if kind == "v":
        return sqrt_a * out + sqrt_1ma * x_t
    if kind == "x0-vp":
        return (x_t - sqrt_a * out) / sqrt_1ma
    raise ValueError(f"unknown parameterisation {kind!r}")


def ve_image(x_t, sqrt_a):
    """The VP noisy image on the variance-exploding scale of EDM (Karras et al. 2022): x = x_t / sqrt(a)."""
    return x_t / sqrt_a


def ve_sigma(sqrt_a, sqrt_1ma):
    """EDM's noise level of that image: sigma = sqrt((1 - a) / a), as sqrt(1 - a) / sqrt(a)."""
    return sqrt_1ma / sqrt_a
